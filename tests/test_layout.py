"""The house rules of the code base, checked on every run (README, "Layout"): packages form floors
and import only downwards (no import, lazy ones included, from a lower floor to a higher one, and
none between two packages of one floor); no import cycle between modules; no module over 600 lines
and no function over 80 lines outside the tests."""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"common": 0, "data": 1, "backbones": 1, "tracker": 2, "training": 3, "evaluation": 3, "tools": 4}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 600, 80


def _modules() -> dict[str, Path]:
    found = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_site" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, bool]]:
    """(imported toolkit module, at module level) for every import statement of a module."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in FLOORS:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                out.append((target, id(node) in top_level))
    return out


def test_packages_import_only_downwards():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        own = name.split(".")[0]
        for target, _ in _imports(name, path, modules):
            other = target.split(".")[0]
            if other != own and FLOORS[other] >= FLOORS[own]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = defaultdict(set)
    for name, path in modules.items():
        for target, top in _imports(name, path, modules):
            if top and target != name and not name.startswith(target + "."):   # a package's own __init__
                graph[name].add(target)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_modules_and_functions_stay_small():
    too_big = []
    for name, path in _modules().items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"function {name}.{node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)
