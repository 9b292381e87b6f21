"""The package layout holds: imports point down the layers (so no package imports round in a circle), the
pipeline's runner names no stage, and no private part of an upstream library is used outside the adapters."""

import ast
import re
from pathlib import Path

import pytest

import rca_lightning
from rca_lightning.pipeline import STAGE_NAMES

PACKAGE = Path(rca_lightning.__file__).parent
# Bottom first: a package may import packages of lower layers only.
LAYERS = (
    ("adapters", "compat", "conf"),
    ("utils",),
    ("imaging",),
    ("data", "memory", "losses", "metrics", "models"),
    ("pseudo",),
    ("callbacks",),
    ("lit",),
    ("inference", "report"),
    ("tasks",),
    ("pipeline",),
    ("cli",),
)
LEVEL = {package: level for level, layer in enumerate(LAYERS) for package in layer}
# The top-level facade (rca_lightning/__init__.py) re-exports from below; it is nobody's import.
FACADE = PACKAGE / "__init__.py"
# The upstream libraries whose private modules (a part starting with "_") must not be imported.
UPSTREAM = ("torch", "lightning", "hydra", "omegaconf", "timm", "wandb", "huggingface_hub", "torchvision")


def _package_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def imports() -> list[tuple[Path, int, str]]:
    """(file, line, imported rca_lightning package) of every import inside the package, but the facade's."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == FACADE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "rca_lightning" and len(parts) > 1:
                    found.append((path, node.lineno, parts[1]))
    return found


def test_every_package_has_a_layer():
    packages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert packages == set(LEVEL), "a new package needs its place in LAYERS"


def test_imports_point_down_the_layers():
    upward = [
        f"{path.relative_to(PACKAGE)}:{line} imports rca_lightning.{target}"
        for path, line, target in imports()
        if _package_of(path) != target and LEVEL[target] >= LEVEL[_package_of(path)]
    ]
    assert not upward, "\n".join(upward)


def test_the_runner_and_the_plan_name_no_stage():
    for module in ("runner.py", "plan.py", "stage.py", "settings.py", "clock.py"):
        source = (PACKAGE / "pipeline" / module).read_text()
        named = [name for name in STAGE_NAMES if re.search(rf"[\"']{name}[\"']", source)]
        assert not named, f"pipeline/{module} names the stages {named}"


def _private_uses(path: Path) -> list[str]:
    """Imports of an upstream ``_private`` module, and ``obj._private`` attributes of anything but ``self`` /
    ``cls`` (an upstream object's private parts; the project's own modules keep theirs to themselves too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for module in modules:
            parts = module.split(".")
            if parts[0] in UPSTREAM and any(part.startswith("_") for part in parts):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} import {module}")
            names = [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if parts[0] in UPSTREAM and private:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} from {module} import {private}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    return found


@pytest.mark.parametrize(
    "folder", sorted({path.name for path in PACKAGE.iterdir() if path.is_dir()} - {"adapters"})
)
def test_no_private_upstream_name_outside_the_adapters(folder):
    uses = [use for path in sorted((PACKAGE / folder).rglob("*.py")) for use in _private_uses(path)]
    assert not uses, "\n".join(uses)
