"""The import layers of docs/architecture.md, read off the sources (every import, at module
level or inside a function): no package imports one above it, no task imports another, and
``import planners`` / ``import learners`` load no env."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "planners", "learners", "envs", "rlmpc")
TASKS = ("acrobot", "lunar_lander", "racing")

#: what each layer may import besides itself (docs/architecture.md, "Layers")
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "planners": {"common"},
    "learners": {"common"},
    "envs.core": {"common", "planners"},
    **{f"envs.{t}": {"envs.core", "planners", "common"} for t in TASKS},
    "envs": {"envs.core", *(f"envs.{t}" for t in TASKS), "planners", "common"},
}
_BELOW_RLMPC = {
    "common",
    "planners",
    "learners",
    "envs",
    "envs.core",
    *(f"envs.{t}" for t in TASKS),
}
ALLOWED |= {
    "rlmpc": {"rlmpc.api"},
    "rlmpc.api": _BELOW_RLMPC | {"rlmpc.system", "rlmpc.run"},
    "rlmpc.system": _BELOW_RLMPC,
    "rlmpc.run": _BELOW_RLMPC | {"rlmpc.system"},
    "rlmpc.evaluate": {"rlmpc.run"},
    "rlmpc.enjoy": {"rlmpc.run"},
    "rlmpc.baselines": _BELOW_RLMPC | {"rlmpc.system", "rlmpc.run"},
    "rlmpc.reproduce": _BELOW_RLMPC | {"rlmpc.system", "rlmpc.run", "rlmpc.baselines"},
    "rlmpc.bench": _BELOW_RLMPC | {"rlmpc.system", "rlmpc.run", "rlmpc.baselines"},
    "rlmpc.ops": _BELOW_RLMPC | {"rlmpc.run"},
}


def layer(module: str) -> str:
    """The layer of a dotted module name (``envs.core``: the registry, base and danger zone)."""
    parts = module.split(".")
    if parts[0] == "rlmpc" and len(parts) > 1:
        return f"rlmpc.{parts[1]}"
    if parts[0] == "envs" and len(parts) > 1:
        return f"envs.{parts[1]}" if parts[1] in TASKS else "envs.core"
    return parts[0]


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every project import in the packages."""
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # ``from envs import acrobot`` imports a module of the package too
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in PACKAGES:
                        out.append((module, _existing(name), node.lineno))
    return out


def _existing(name: str) -> str:
    """``name`` cut back to a module or package that exists (``from a.b import C``: ``a.b``)."""
    parts = name.split(".")
    while parts and not (
        (ROOT / Path(*parts)).with_suffix(".py").is_file() or (ROOT / Path(*parts)).is_dir()
    ):
        parts.pop()
    return ".".join(parts)


def test_every_import_goes_down_a_layer_or_stays_within_one():
    bad = [
        f"{m} (line {line}) imports {target}"
        for m, target, line in imports()
        if layer(target) != layer(m) and layer(target) not in ALLOWED[layer(m)]
    ]
    assert not bad, "\n".join(bad)


def test_the_layers_form_no_circle():
    seen: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"circle: {' -> '.join((*path, node))}"
        if seen.get(node):
            return
        for nxt in ALLOWED[node]:
            visit(nxt, (*path, node))
        seen[node] = 1

    for node in ALLOWED:
        visit(node, ())


def test_the_layer_rules_catch_an_upward_import():
    """Negative control: the envs -> planners circle of old, and one task importing another."""
    assert "envs.core" not in ALLOWED[layer("planners.costs")] | {layer("planners.costs")}
    assert layer("envs.racing.model") != layer("envs.lunar_lander.model")
    assert "envs.lunar_lander" not in ALLOWED[layer("envs.racing.model")]


@pytest.mark.parametrize("package", ["planners", "learners", "common"])
def test_importing_a_lower_package_loads_no_env(package):
    code = f"import sys, {package}; print(sorted(m for m in sys.modules if m == 'envs' or m.startswith(('envs.', 'rlmpc'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
