"""The shape of the package, held by tests: packages by layer, small modules, no import cycle,
annotated public functions, and the review layer reading results as values, never as dicts."""

import ast
from pathlib import Path

import pytest

import cd125gate

SRC = Path(__file__).parents[1] / "src/cd125gate"
MAX_MODULES_PER_PACKAGE = 12
MAX_LINES_PER_MODULE = 500
# The top of the house: the command imports everything and nothing imports it; the review
# layer (screening, reviews, re-gating, the page, sign-out) reads results and figures, and
# nothing below it reaches up into it.
TOP_LAYERS = ("review", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def imported_modules(path: Path) -> set[str]:
    """The package's modules ``path`` imports, at module level or inside functions (not for type hints)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                found.update(f"{base}.{a.name}" for a in child.names)
                found.add(base)
            visit(child)

    visit(ast.parse(path.read_text()))
    resolved = set()
    for name in found:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != me:
            resolved.add(name)
    return resolved


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in GRAPH:
        if v not in index:
            strong(v)
    return groups


def test_no_import_cycle_not_even_through_function_local_imports():
    assert cycles() == []


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["cd125gate.errors"].add("cd125gate.settings")
    try:
        assert any({"cd125gate.errors", "cd125gate.settings"} <= set(group) for group in cycles())
    finally:
        GRAPH["cd125gate.errors"].discard("cd125gate.settings")


def top_layer(name: str) -> int:
    """0 below the review layer, 1 for review, 2 for the command."""
    parts = name.split(".")
    return TOP_LAYERS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in TOP_LAYERS else 0


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_reaches_up_into_the_review_layer_or_the_command(name):
    above = sorted(m for m in GRAPH[name] if top_layer(m) > top_layer(name))
    assert above == [], f"{name} reaches up into {above}"


@pytest.mark.parametrize("package", sorted({p.parent for p in SRC.rglob("*.py")}))
def test_no_package_holds_more_than_a_dozen_modules(package):
    modules = [p for p in package.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES_PER_PACKAGE, package


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES_PER_MODULE


def unannotated(path: Path) -> list[str]:
    """Public functions and methods of ``path`` with a parameter or return left without a type."""
    missing = []

    def check(fn: ast.FunctionDef, owner: str) -> None:
        args = fn.args
        params = args.posonlyargs + args.args + args.kwonlyargs
        if owner and params and params[0].arg in ("self", "cls"):
            params = params[1:]
        params += [a for a in (args.vararg, args.kwarg) if a]
        if fn.returns is None or any(p.annotation is None for p in params):
            missing.append(f"{owner}{fn.name}")

    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            check(node, "")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    check(item, f"{node.name}.")
    return missing


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_function_is_annotated(name):
    assert unannotated(MODULES[name]) == []


def test_the_package_face_names_its_public_api():
    assert callable(cd125gate.analyze_sample) and callable(cd125gate.read_fcs)
    assert callable(cd125gate.load_settings)
    assert cd125gate.SampleResult.__name__ == "SampleResult"
    assert issubclass(cd125gate.InputError, Exception)
    with pytest.raises(AttributeError):
        cd125gate.plots  # noqa: B018 - a layer is not part of the face


RESULT_NAMES = {"result", "reviewed", "stained_result", "sample_result"}


def reads_result_as_dict(path: Path) -> list[str]:
    """Lines of ``path`` that read a result as a dict: ``result.get(...)``, ``result[...]``, ``x.to_json()[...]``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target = node.func.value
        elif isinstance(node, ast.Subscript):
            target = node.value
        if target is None:
            continue
        named = isinstance(target, ast.Name) and target.id in RESULT_NAMES
        as_json = (isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
                   and target.func.attr == "to_json")
        if named or as_json:
            found.append(f"{path.name}:{node.lineno}")
    return found


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("cd125gate.results")))
def test_no_result_is_read_as_a_dict_outside_the_results_layer(name):
    assert reads_result_as_dict(MODULES[name]) == []


def test_the_dict_finder_finds_a_dict_read(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f(result, r):\n    return result.get('criterion'), r.to_json()['gates']\n")
    assert reads_result_as_dict(path) == ["bad.py:2", "bad.py:2"]
