"""The package's import graph: no cycles, and each folder imports only the layers below it.

Every import counts, function-local ones included (read with ast, nothing is executed): a local import
that exists to dodge a cycle is a misplaced module, and this test names it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mxfp4"

# Lowest first. A module may import its own layer and any layer before it.
LAYERS = [
    ("mxfp4.errors", "mxfp4.dtypes", "mxfp4.progress", "mxfp4.choices", "mxfp4.distributed"),
    ("mxfp4.codec",),
    ("mxfp4.storage",),
    ("mxfp4.gpt_oss",),
    ("mxfp4.convert",),
    ("mxfp4.fit",),
    ("mxfp4.finetune",),
    ("mxfp4.model",),
    ("mxfp4.eval",),
    ("mxfp4.calibrate",),
    ("mxfp4.testing",),
    ("mxfp4.cli", "mxfp4"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_in(text: str, name: str, modules: set[str], packages: set[str]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (source ``text``) imports anywhere, function-local
    imports included; ``packages``: the names among them that are packages (relative imports start there)."""
    here = name if name in packages else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("mxfp4"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    found.discard(name)
    return found


def imported_modules(name: str) -> set[str]:
    """The package's modules that `name` imports anywhere in its text."""
    packages = {m for m in MODULES if is_package(m)}
    return imports_in(MODULES[name].read_text(), name, set(MODULES), packages)


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer_of(name: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{name} belongs to no layer; add it to LAYERS"
    return best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_function_local_imports():
    modules = {"mxfp4.codec", "mxfp4.codec.layout", "mxfp4.convert", "mxfp4.convert.api", "mxfp4.errors"}
    packages = {"mxfp4.codec", "mxfp4.convert"}
    text = (
        "import os\n"
        "from ..errors import CheckpointError\n"
        "def f():\n"
        "    from ..codec import layout\n"
        "    class C:\n"
        "        def g(self):\n"
        "            import mxfp4.convert\n"
    )
    found = imports_in(text, "mxfp4.convert.api", modules, packages)
    assert found == {"mxfp4.errors", "mxfp4.codec.layout", "mxfp4.convert"}
    assert imports_in("from . import api\n", "mxfp4.convert", modules, packages) == {"mxfp4.convert.api"}


def test_tarjan_finds_a_cycle_and_the_real_graph_has_edges():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "mxfp4.codec.layout_reference" in GRAPH["mxfp4.codec.tensor"]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_imports_only_go_down():
    upward = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []
