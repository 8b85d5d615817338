"""The layering of dicomkeep.common, read from the source (every import counts:
module level, `TYPE_CHECKING` blocks and imports inside functions).

- no import cycle between modules of dicomkeep.common;
- dicomkeep.common, its adapters included, imports no service (services depend
  on it, not back).

That ports import no adapter is checked by tests/unit/test_dependencies.py.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Collection
from pathlib import Path

import dicomkeep.common
import pytest

COMMON = "dicomkeep.common"
Graph = dict[str, set[str]]


def modules_under(package_dir: Path, package: str) -> dict[str, Path]:
    """Return module name -> file for every module of a package directory."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_modules(path: Path, known: Collection[str]) -> set[str]:
    """Return the modules a file imports: `from pkg import module` names the
    module, `from module import name` the module, `import module` itself."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    return names


def import_graph(modules: dict[str, Path]) -> tuple[Graph, Graph]:
    """Return (imports between the given modules, every dicomkeep module each imports)."""
    internal: Graph = {}
    external: Graph = {}
    for name, path in modules.items():
        imported = imported_modules(path, modules)
        internal[name] = {m for m in imported if m in modules} - {name}
        external[name] = {m for m in imported if m.startswith("dicomkeep.")}
    return internal, external


def find_cycle(graph: Graph) -> list[str] | None:
    """Return one import cycle (its modules, the first repeated at the end), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle: list[str] = error.args[1]
        return cycle
    return None


def violations(imports: Graph) -> list[str]:
    """Return the imports of a service module by a module of dicomkeep.common."""
    return [
        f"{module} imports the service module {name}"
        for module, names in sorted(imports.items())
        for name in sorted(names)
        if not name.startswith(f"{COMMON}.") and name != COMMON
    ]


@pytest.fixture(scope="module")
def common_graph() -> tuple[Graph, Graph]:
    package_dir = Path(next(iter(dicomkeep.common.__path__)))
    return import_graph(modules_under(package_dir, COMMON))


def test_common_has_no_import_cycle(common_graph: tuple[Graph, Graph]) -> None:
    internal, _ = common_graph
    assert f"{COMMON}.index.core" in internal  # the graph covers the subpackages
    assert find_cycle(internal) is None


def test_common_imports_no_service(common_graph: tuple[Graph, Graph]) -> None:
    _, imports = common_graph
    assert violations(imports) == []


def test_the_checks_catch_what_they_forbid() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert violations({
        f"{COMMON}.adapters.s3_blobs": {"dicomkeep.gateway.main"},
        f"{COMMON}.ids": {f"{COMMON}.events"},
    }) == [f"{COMMON}.adapters.s3_blobs imports the service module dicomkeep.gateway.main"]


def test_a_cycle_in_source_files_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n"
    )
    internal, _ = import_graph(modules_under(package, "pkg"))
    assert internal["pkg.a"] == {"pkg.sub.b"}
    assert find_cycle(internal) is not None
