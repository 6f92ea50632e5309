"""The package's layers import downward only, and nothing imports in a cycle (docs/design.md).

Checked with import-linter's contracts (`.importlinter`) on the import graph grimp builds, which
includes imports inside functions, so a cycle cannot hide behind a function-local import.
"""

import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    run = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config", str(ROOT / ".importlinter")],
                         cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0 and "No module named importlinter.cli" in run.stderr:
        run = subprocess.run(["lint-imports", "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                             capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _module_graph() -> nx.DiGraph:
    graph = grimp.build_graph("gridtune", cache_dir=None, exclude_type_checking_imports=True)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    return g


def test_no_import_cycles_between_modules():
    g = _module_graph()
    # a package's __init__ naming its own sub-modules is not a cycle of code
    g.remove_nodes_from(["gridtune"])
    # every module of a strongly connected group of two or more lies on a cycle, however long
    tangles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not tangles, "modules importing each other in a cycle:\n" + "\n".join(map(str, tangles))


@pytest.mark.parametrize("forbidden", ["gridtune.grids", "gridtune.nn", "gridtune.constraints",
                                       "gridtune.evaluation", "gridtune.workflows"])
def test_the_fine_tuning_core_knows_no_grid(forbidden):
    graph = grimp.build_graph("gridtune", cache_dir=None, exclude_type_checking_imports=True)
    chains = graph.find_shortest_chains(importer="gridtune.core", imported=forbidden)
    assert not chains, f"gridtune.core reaches {forbidden}: {sorted(chains)[:3]}"
