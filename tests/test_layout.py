"""The package's structure rules, read from its source: imports point one way (no cycle), and no
code outside ``reidkit/models/`` compares model names or probes a model's attributes: it reads
``model.spec`` (the model contract) instead."""

from __future__ import annotations

import ast
from pathlib import Path

from reidkit.models import MODELS

PACKAGE = Path(__file__).resolve().parents[1] / "reidkit"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the reidkit modules it imports (anywhere in it: top level, functions, type checks)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 60 and "reidkit.models.spec" in graph["reidkit.models.io"]
    assert find_cycle(graph) is None


def test_evaluation_knows_nothing_of_models_or_training():
    for name, targets in import_graph().items():
        if name.startswith(("reidkit.evaluation", "reidkit.data", "reidkit.losses")):
            assert not {t for t in targets if t.startswith(("reidkit.models", "reidkit.training",
                                                            "reidkit.cli"))}, name


def model_probes(path: Path) -> list[str]:
    """Model-name comparisons and ``getattr``/``hasattr`` on models in one source file."""
    names = set(MODELS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant) and side.value in names:
                    found.append(f"{path.name}:{node.lineno} compares with {side.value!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and node.args):
            subject = ast.unparse(node.args[0])
            if "model" in subject or "net" in subject or "target" in subject:
                found.append(f"{path.name}:{node.lineno} {node.func.id}({subject}, ...)")
    return found


def test_model_probe_finder_finds_probes(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('if cfg.name == "mtdnet" or getattr(model, "caffe_input", False):\n    pass\n')
    assert model_probes(source) == ["x.py:1 compares with 'mtdnet'", "x.py:1 getattr(model, ...)"]


def test_no_model_probes_outside_the_models_package():
    outside = [p for p in PACKAGE.rglob("*.py") if "models" not in p.relative_to(PACKAGE).parts]
    assert len(outside) > 40
    assert [probe for path in outside for probe in model_probes(path)] == []


def test_tests_mirror_the_package_layout():
    tests = Path(__file__).resolve().parent
    folders = sorted(p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py")))
    assert {"data", "models", "training", "evaluation", "retrieval"} <= set(folders)
    assert [f for f in folders if not (PACKAGE / f / "__init__.py").is_file()] == []
