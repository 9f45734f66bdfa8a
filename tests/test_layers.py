"""The house's one-way floors (DESIGN.md, Layout), checked on the code's own imports.

``simulators`` ← ``priors`` ← ``twin`` ← ``scenarios`` ← ``dashboard`` ← ``cli``: the
contract lives in ``pyproject.toml`` (``[tool.importlinter]``) and is checked here with
import-linter, so a wrong import fails the suite, not only ``make lint``. Import cycles
between modules are found on the same import graph (grimp, import-linter's engine),
counting imports inside functions and leaving out ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted.

    Examples
    --------
    >>> import_cycles({"a": ["b"], "b": ["a"], "c": ["a"]})
    [['a', 'b']]
    >>> import_cycles({"a": ["b"], "b": []})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in imports.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return sorted(components)


def test_layers_contract_is_kept(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph("twinsim", exclude_type_checking_imports=True, cache_dir=None)
    # a package's __init__ re-exporting its own modules is the public surface, not a cycle
    imports = {
        module: {
            other
            for other in graph.find_modules_directly_imported_by(module)
            if not module.startswith(other + ".") and not other.startswith(module + ".")
        }
        for module in graph.modules
        if module.startswith("twinsim")
    }
    assert import_cycles(imports) == []


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, [["a", "b", "c"]]),
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycle_finder_finds_cycles(imports, expected) -> None:
    assert import_cycles(imports) == expected
