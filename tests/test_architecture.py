"""The package's shape: dependencies point one way and no module imports itself in a circle.

Every ``import`` in ``chatbot/`` and ``ui/`` is read with ``ast`` (imports inside functions
count too: a lazy import is still a dependency), giving a module graph. Two checks:

- no cycles (Tarjan's strongly connected components over the graph);
- no upward imports between stages: web and the CLI -> conversations -> answering ->
  retrieval / generation -> knowledge -> config / types / errors; offline tooling (training,
  evaluation) may import serving code, never the reverse; retrieval and generation do not
  import each other.

Both checks also run on small packages written here with a deliberate cycle and a deliberate
upward import, so a checker that silently finds nothing would fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Rank of each top-level part: an import may only go to a strictly lower rank (or stay inside
# its own part). Equal ranks of different parts may not import each other.
RANKS: dict[str, float] = {
    "chatbot": 0,  # the package __init__ (version only)
    "chatbot.config": 0,
    "chatbot.types": 0,
    "chatbot.errors": -1,  # imports nothing of ours
    "chatbot.knowledge": 1,
    "chatbot.retrieval": 2,
    "chatbot.generation": 2,
    "chatbot.answering": 3,
    "chatbot.conversations": 4,
    # The learning loop reads the conversation log and the index; the web app wires it to the
    # service (a resolved conversation feeds it) through callbacks, never the other way.
    "chatbot.learning": 4.5,
    "ui": 5,  # the Gradio UI: mounted by the web app, calls the conversation service
    "chatbot.web": 6,
    "chatbot.evaluation": 7,  # offline tooling: may use any serving code
    "chatbot.training": 8,  # uses evaluation's dataset splits
    "chatbot.cli": 9,  # the edge that launches everything
    "chatbot.__main__": 10,
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (at any depth of the file)."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: resolve against this module's package
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the submodule when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for target in targets:
                while target and target not in files:  # `a.b.Name` -> module `a.b`
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def part_of(module: str, ranks: dict[str, float]) -> str:
    """The longest key of ``ranks`` that is ``module`` or a package above it."""
    best = ""
    for part in ranks:
        if (module == part or module.startswith(part + ".")) and len(part) > len(best):
            best = part
    if not best:
        raise AssertionError(f"{module} belongs to no layer: add its part to RANKS")
    return best


def upward_imports(graph: dict[str, set[str]], ranks: dict[str, float]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        mine = part_of(module, ranks)
        for target in sorted(targets):
            theirs = part_of(target, ranks)
            if theirs != mine and ranks[theirs] >= ranks[mine]:
                bad.append(f"{module} -> {target}")
    return bad


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph(ROOT, ["chatbot", "ui"])
    assert len(graph) > 40  # really read the package
    assert cycles(graph) == []


def test_dependencies_point_one_way() -> None:
    graph = import_graph(ROOT, ["chatbot", "ui"])
    assert upward_imports(graph, RANKS) == []


def test_every_stage_folder_is_a_layer() -> None:
    stages = {p.name for p in (ROOT / "chatbot").iterdir()
              if p.is_dir() and (p / "__init__.py").exists()}
    assert stages <= {"knowledge", "retrieval", "generation", "answering", "conversations",
                      "learning", "web", "training", "evaluation"}
    assert all(f"chatbot.{s}" in RANKS for s in stages)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("import_line", [
    "from pkg.a import thing\n",  # absolute
    "from .a import thing\n",  # relative
    "def lazy():\n    from pkg import a\n",  # inside a function, submodule through its package
])
def test_the_checker_finds_a_deliberate_cycle(tmp_path: Path, import_line: str) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import other\nthing = 1\n",
                      "pkg/b.py": import_line + "other = 2\n"})
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b"]]


def test_the_checker_finds_a_deliberate_upward_import(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "", "pkg/low/x.py": "import pkg.high.y\n",
        "pkg/high/__init__.py": "", "pkg/high/y.py": "from pkg.low import x\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    ranks = {"pkg": 0, "pkg.low": 1, "pkg.high": 2}
    assert upward_imports(graph, ranks) == ["pkg.low.x -> pkg.high.y"]
