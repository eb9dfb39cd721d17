"""Install avssl: `pip install -e .` (the Makefile does this inside .venv).

Two lists of dependencies, on purpose:
- requirements.txt pins the exact stack that .venv and CI test (`make` installs it, then avssl
  with `pip install --no-deps -e .`);
- install_requires below gives the ranges the package supports, so installing avssl into an
  existing environment keeps its torch (and the rest) instead of replacing it. A lower bound is
  the tested version from requirements.txt (major.minor) unless a comment says otherwise; there
  is no upper bound unless a version is known to break avssl.
"""

from pathlib import Path

from setuptools import find_packages, setup

install_requires = [
    # torchvision / torchaudio releases each require one torch release; pip picks the ones that
    # match the torch already installed
    "torch>=2.9",
    "torchvision>=0.24",
    "torchaudio>=2.9",
    "av>=18",  # PyAV: decoding, probing, re-encoding, writing overlays
    "numpy>=2.0",  # any numpy 2 (only long-stable API is used)
    "numba>=0.68",  # fused colour-jitter kernel (avssl falls back to torch ops without it)
    "soundfile>=0.14",
    "PyYAML>=6.0",
    "tqdm>=4.70",
    "tensorboard>=2.21",  # torch.utils.tensorboard.SummaryWriter for run logs
    "matplotlib>=3.11",
    "pillow>=9.1",  # imported directly (Image.Resampling needs 9.1); torchvision needs it anyway
]

extras_require = {
    # second decoding backend (`data.backend: decord`); no wheels for some platforms (e.g. ARM)
    "decord": ["decord>=0.6"],
    # tests and lint; librosa is only the tests' reference for the spectrogram
    "dev": ["pytest>=9.2", "ruff>=0.17", "librosa>=0.11"],
}

setup(
    name="avssl",
    version="0.1.0",
    description="Audio-visual self-supervised learning: AVID + CMA, pretext tasks, evaluation, "
    "sound-source localization",
    long_description=(Path(__file__).parent / "README.md").read_text()
    if (Path(__file__).parent / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # the tested Python; av>=18 and matplotlib>=3.11 require it
    packages=find_packages(include=["avssl", "avssl.*"]),
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": ["avssl=avssl.cli:main"]},
)
