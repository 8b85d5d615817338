"""Every package imported by a workspace package is declared in its pyproject.toml.

In the shared venv an undeclared dependency goes unnoticed (another package
brings it in); installed alone, the package would fail at import. Each package's
source is parsed with `ast`, its top-level imports mapped to distributions with
`importlib.metadata.packages_distributions`, and compared with the package's
`dependencies` plus its optional extras (drivers imported only by their adapter).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")])


def _declared(project: dict[str, object]) -> set[str]:
    requirements = list(project.get("dependencies", []))  # type: ignore[call-overload]
    for extra in dict(project.get("optional-dependencies", {})).values():  # type: ignore[call-overload]
        requirements += extra
    return {canonicalize_name(Requirement(text).name) for text in requirements}


def _imports(source: Path) -> set[str]:
    """Top-level names imported by a module (`dicomkeep.x` kept as `dicomkeep.x`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            names.add(".".join(parts[:2]) if parts[0] == "dicomkeep" else parts[0])
    return names


def _distributions(module: str) -> set[str]:
    if module.startswith("dicomkeep."):
        return {canonicalize_name("dicomkeep-" + module.split(".")[1])}
    return {canonicalize_name(name) for name in packages_distributions().get(module, [])}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_import_is_declared(package: Path) -> None:
    project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    own = canonicalize_name(project["name"])
    declared = _declared(project) | {own}
    missing: dict[str, set[str]] = {}
    for source in sorted((package / "src").rglob("*.py")):
        for module in _imports(source) - set(sys.stdlib_module_names) - {"__future__"}:
            distributions = _distributions(module)
            assert distributions, f"{source}: no installed distribution provides {module}"
            if not distributions & declared:
                missing.setdefault(module, set()).add(source.relative_to(ROOT).as_posix())
    assert not missing, f"{project['name']} imports undeclared packages: {missing}"


def _modules_imported(source: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


COMMON = ROOT / "libs/common/src/dicomkeep/common"
SERVICES = tuple(f"dicomkeep.{p.name}" for p in ROOT.glob("services/*") if p.is_dir())


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [("ports", ("dicomkeep.common.adapters",)), ("adapters", SERVICES)],
    ids=["ports-import-no-adapters", "adapters-import-no-services"],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    offending = {
        f"{source.relative_to(ROOT).as_posix()}: {module}"
        for source in sorted((COMMON / layer).rglob("*.py"))
        for module in _modules_imported(source)
        if module.startswith(forbidden)
    }
    assert not offending
