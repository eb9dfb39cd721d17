"""Install avssl: `pip install -e .` (the Makefile does this inside .venv)."""

from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "ruff"))
]

setup(
    name="avssl",
    version="0.1.0",
    description="Audio-visual self-supervised learning: AVID + CMA, pretext tasks, evaluation, "
    "sound-source localization",
    long_description=(Path(__file__).parent / "README.md").read_text()
    if (Path(__file__).parent / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["avssl", "avssl.*"]),
    install_requires=requirements,
    extras_require={"dev": ["pytest==9.2.0", "ruff==0.17.6"]},
    entry_points={"console_scripts": ["avssl=avssl.cli:main"]},
)
