"""The layering, read from the source: which module imports which (every ``import``, top-level or inside
a function, parsed with ``ast``; nothing is imported).

* No module of the core packages, the core's own command line (``embtune.cli``) included, imports an
  integration (``embtune_faiss``, ``embtune_langchain``, ``embtune_llamaindex``), at module level or
  inside a function: the integrations call the core, never the other way round (FAISS-index
  evaluation is the embtune-faiss package's own command, ``embtune-faiss eval``).
* No core module outside ``embtune.cli`` imports the CLI.
* There is no import circle between modules (imports that run; ``if TYPE_CHECKING:`` blocks are type
  hints only).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"embtune": ROOT / "packages" / "embtune" / "src" / "embtune",
            "embtune_kernels": ROOT / "kernels" / "src" / "embtune_kernels"}
INTEGRATIONS = ("embtune_faiss", "embtune_langchain", "embtune_llamaindex")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the core packages."""
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (imports for type hints
    only, never run: PEP 484's way to name a type without depending on its module at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name ``path`` imports (relative imports made absolute; ``from a import b`` gives
    ``a.b``: the module ``a.b`` when there is one, else the name ``b`` of package or module ``a``),
    wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the core packages it imports (names resolved to their module)."""
    mods = modules()

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    return {name: {m for m in map(owner, imported_names(name, path)) if m and m != name}
            for name, path in mods.items()}


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def is_cli(dotted: str) -> bool:
    """True for ``embtune.cli`` and its modules."""
    return dotted == "embtune.cli" or dotted.startswith("embtune.cli.")


def test_the_core_imports_neither_the_cli_nor_an_integration():
    offenders = [f"{name} imports {imported}" for name, path in modules().items()
                 for imported in imported_names(name, path)
                 if (is_cli(imported) and not is_cli(name)) or imported.split(".")[0] in INTEGRATIONS]
    assert not offenders, "\n".join(sorted(offenders))


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, f"import circle(s): {sorted(sorted(c) for c in found)}"


def test_the_checks_see_what_they_look_for(tmp_path):
    """Controls: the parser finds a lazy import inside a function, and the circle finder finds a circle."""
    graph = import_graph()
    # embtune.pipeline.training imports the model resolver inside a function body
    assert "embtune.models.names" in graph["embtune.pipeline.training"]
    # an integration imported inside a function of a CLI module is seen (and would fail the test above)
    lazy = tmp_path / "eval_cmd.py"
    lazy.write_text("def run():\n    from embtune_faiss.evaluation import evaluate\n", encoding="utf-8")
    assert imported_names("embtune.cli.eval_cmd", lazy) == {"embtune_faiss.evaluation.evaluate"}
    assert is_cli("embtune.cli.options") and not is_cli("embtune.client")
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    # imports under `if TYPE_CHECKING:` are skipped, every other one is seen
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                     "def f():\n    import c\n")
    seen = {alias.name for node in runtime_nodes(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert seen == {"b", "c"}
    assert circles({"a": {"b"}, "b": set()}) == set()
