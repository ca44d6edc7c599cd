"""engine/ never imports streamlit: everything the app does, a script can do by importing `engine`."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def imported_modules(path: Path) -> list[str]:
    """Top-level names of every module a file imports, at any depth (inside functions too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value).split(".")[0])
    return names


def test_the_checker_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom a.b import c\ndef f():\n    import streamlit as st\n"
                      "    importlib.import_module('plotly.express')\nfrom . import sibling\n")
    assert imported_modules(sample) == ["os", "a", "streamlit", "plotly"]


def test_no_engine_file_imports_streamlit():
    files = sorted(ENGINE.glob("**/*.py"))
    assert ENGINE / "data" / "loaders.py" in files
    offenders = [f.relative_to(ROOT).as_posix() for f in files if "streamlit" in imported_modules(f)]
    assert offenders == []


def test_importing_every_engine_module_does_not_load_streamlit():
    modules = sorted("engine." + p.relative_to(ENGINE).with_suffix("").as_posix().replace("/", ".")
                     for p in ENGINE.glob("**/*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert "engine.data.loaders" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "loaded = sorted(m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.'))\n"
            "print('engine' in sys.modules, loaded)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True []"
