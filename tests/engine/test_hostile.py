"""Hostile input in real child processes: a regex bomb under a memory cap, and two cleaners racing on one folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMORY_CAP = 1024**3  # the bomb below grows a process past 8 GB; Loupe must refuse it long before 1 GiB


def run_python(code: str, *args: str, memory_cap: int | None = None, stdin: int | None = None) -> subprocess.Popen:
    """Start `python -c code args…` in the repository, under an address-space cap set by the child itself."""
    prelude = ""
    if memory_cap is not None:
        prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_cap}, {memory_cap}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", prelude + code, *args], cwd=REPO, env=env, text=True,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---------------------------------------------------------------- a regex that explodes while compiling

BOMBS = [r"((a{1000}){1000}){1000}(x)", r"(a{999}){999}", r"((a{100}){100}){100}", r"(a{100000000})",
         r"(?P<label>(?:x{5000}){5000})", r"(x)(?:[a-z]{9999}){9999}"]
COMPILE_ALL = """
import json, resource, sys
from engine.errors import UserError
from engine.labels import compile_pattern
out = []
for pattern in json.loads(sys.argv[1]):
    try:
        compile_pattern(pattern)
        out.append("compiled")
    except UserError as e:
        out.append("refused: " + str(e))
    except MemoryError:
        out.append("MemoryError")
print(json.dumps({"outcomes": out, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX only")
def test_regex_bombs_are_refused_before_compiling_within_a_memory_cap():
    sane = [r"^(.+)_\d+\.png$", r"(?P<label>[a-z]+)_\d{1,4}\.jpg", r"(\d{3})"]
    child = run_python(COMPILE_ALL, json.dumps(BOMBS + sane), memory_cap=MEMORY_CAP)
    stdout, stderr = child.communicate()
    assert child.returncode == 0, stderr
    result = json.loads(stdout)
    outcomes = dict(zip(BOMBS + sane, result["outcomes"]))
    for bomb in BOMBS:
        assert outcomes[bomb].startswith("refused: The pattern"), (bomb, outcomes[bomb])
        assert "Traceback" not in outcomes[bomb]
    assert [outcomes[p] for p in sane] == ["compiled"] * 3
    assert result["max_rss_kb"] * 1024 < MEMORY_CAP
