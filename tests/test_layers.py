"""engine/'s packages import one way (store → data → train → results → cli) and no two engine modules import each
other, at module level or inside a function: data flows one way through the code, as it does through the app."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
# the schema and the plain-message errors are below everything; the CLI is above everything
RANK = {"errors": 0, "spec": 0, "store": 1, "data": 2, "train": 3, "results": 4, "cli": 5, "__main__": 5,
        "__init__": 0}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_imports(path: Path) -> set[str]:
    """Every engine module a file imports, anywhere in it (`from engine.x import y` counts engine.x.y when that is a
    module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("engine.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("engine"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if module_path(candidate) else node.module)
    return {m for m in found if module_path(m)}


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): engine_imports(p) - {module_name(p)} for p in sorted(ENGINE.glob("**/*.py"))}


def test_the_checker_sees_engine_modules():
    g = graph()
    assert "engine.data.loaders" in g and "engine.data.images" in g["engine.data.loaders"]


def test_packages_import_one_way():
    wrong = sorted(f"{m} imports {dep}" for m, deps in graph().items() for dep in deps
                   if RANK[layer(dep)] > RANK[layer(m)])
    assert wrong == []


def test_no_two_engine_modules_import_each_other():
    g = graph()
    cycles = sorted(f"{a} <-> {b}" for a in g for b in g[a] if a < b and a in g.get(b, set()))
    assert cycles == []
