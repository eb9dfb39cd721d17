"""The package's layers: an import only goes down, and no modules import each other in a cycle.

Layers, bottom to top (docs: README "Layout"): utils (atomic writes, errors, distributed
helpers, checkpoint I/O) < config < data, models, losses, memory < preprocess < methods <
engine < viz < eval < localize < the command line (``avssl/cli.py``, ``cli_config.py``,
``demo.py``, ``compare.py`` and every ``*/cli.py``, which wire the layers together). Lazy
imports inside functions count too: they are still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avssl"

RANK = {"utils": 0, "config": 1, "data": 2, "models": 2, "losses": 2, "memory": 2,
        "preprocess": 3, "methods": 4, "engine": 5, "viz": 6, "eval": 7, "localize": 8}
CLI_RANK = 9
CLI_MODULES = {"avssl", "avssl.__main__", "avssl.cli", "avssl.cli_config", "avssl.demo",
               "avssl.compare"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """``avssl.data.audio`` -> ``data``; ``avssl.config`` -> ``config``."""
    return module.split(".")[1] if "." in module else module


def rank(module: str) -> int:
    if module in CLI_MODULES or module.endswith(".cli"):
        return CLI_RANK
    return RANK[unit(module)]


def imports(path: Path) -> set[str]:
    """The avssl modules ``path`` imports (``from avssl.x import y`` -> ``avssl.x.y`` when that
    is a module, else ``avssl.x``)."""
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "avssl":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "avssl")
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer() -> None:
    unknown = sorted(m for m in graph() if m not in CLI_MODULES and not m.endswith(".cli")
                     and unit(m) not in RANK)
    assert not unknown, f"modules outside every layer (add them to RANK): {unknown}"


def test_imports_only_go_down() -> None:
    upward = []
    for src, targets in graph().items():
        for dst in targets:
            if dst == "avssl" or dst.startswith("avssl.__"):
                continue  # the package root holds only the version
            same_unit = unit(src) == unit(dst) and rank(src) != CLI_RANK
            if rank(dst) > rank(src) or (rank(dst) == rank(src) and not same_unit
                                         and rank(src) != CLI_RANK):
                upward.append(f"{src} -> {dst}")
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if n not in g:
                continue
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)

