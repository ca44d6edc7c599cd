"""Hostile input in real child processes: a regex bomb under a memory cap, and two cleaners racing on one folder."""
from __future__ import annotations

import hashlib
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
import json, sys
from engine.errors import UserError
from engine.data.labels import compile_pattern
out = []
for pattern in json.loads(sys.argv[1]):
    try:
        compile_pattern(pattern)
        out.append("compiled")
    except UserError as e:
        out.append("refused: " + str(e))
    except MemoryError:
        out.append("MemoryError")
# the peak resident memory of this process's own address space (ru_maxrss would include the parent's at the fork)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcomes": out, "max_rss_kb": peak}))
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


# ---------------------------------------------------------------- two cleaners on one folder

PATTERN = r"^(.+)_\d+(?:-\d+)?\.png$"  # reads the free names ('cat_3-1.png') the cleaner picks when one is taken
CLEANER = """
import json, random, sys
from pathlib import Path
from engine.data.clean import DELETE, RELABEL, Change, apply_changes, undo_last
from engine.errors import UserError
from engine.data.labels import LabelRule
rule = LabelRule(kind="regex", pattern=sys.argv[1], on="name")
for line in sys.stdin:  # "ROOT SEED" starts a round of batches on ROOT; both cleaners get theirs at once
    root, seed = Path(line.split()[0]), int(line.split()[1])
    rng = random.Random(seed)
    counts = {"applied": 0, "undone": 0, "refused": 0}
    for _ in range(8):  # each batch trashes one image: 2 × 8 of 20 leaves enough to pick from
        names = sorted(p.name for p in root.glob("*.png"))
        picked = rng.sample(names, min(3, len(names)))
        changes = [Change(picked[0], DELETE)] + [Change(n, RELABEL, rng.choice(["cat", "dog", "emu"])) for n in picked[1:]]
        try:
            apply_changes(root, rule, changes)
            counts["applied"] += 1
            if rng.random() < 0.3 and undo_last(root) is not None:
                counts["undone"] += 1
        except UserError:  # the other cleaner moved a picked image first, or a label is unchanged
            counts["refused"] += 1
    print(json.dumps(counts), flush=True)
"""


def digests(root: Path, skip: set[str] = frozenset()) -> list[str]:
    """The sha256 of every file under root, sorted, except files whose name is in skip."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
                  if p.is_file() and p.name not in skip)


def digests_of(files: dict[str, bytes]) -> list[str]:
    return sorted(hashlib.sha256(data).hexdigest() for data in files.values())


def images_by_name(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.glob("*.png")}


def test_two_cleaners_racing_on_one_folder_lose_nothing_and_undo_restores_it(tmp_path):
    from engine.data.clean import LOCK_NAME, LOG_NAME, undo_last

    cleaners = [run_python(CLEANER, PATTERN, stdin=subprocess.PIPE) for _ in range(2)]
    try:
        for trial in range(4):
            root = tmp_path / f"data{trial}"
            root.mkdir()
            for i in range(20):
                (root / f"{('cat', 'dog')[i % 2]}_{i}.png").write_bytes(f"image {i} of trial {trial}".encode() * 50)
            before = images_by_name(root)

            for k, cleaner in enumerate(cleaners):
                cleaner.stdin.write(f"{root} {trial * 2 + k}\n")
                cleaner.stdin.flush()
            counts = []
            for cleaner in cleaners:
                line = cleaner.stdout.readline()
                assert line, cleaner.stderr.read()
                counts.append(json.loads(line))

            assert sum(c["applied"] for c in counts) > 0
            # every image's bytes are still somewhere, exactly once: in the folder or in its trash
            assert digests(root, skip={LOG_NAME, LOCK_NAME}) == digests_of(before)
            # undoing every batch, newest first, gives back the original folder byte for byte
            while undo_last(root) is not None:
                pass
            assert images_by_name(root) == before
    finally:
        for cleaner in cleaners:
            cleaner.communicate()  # end of input: the cleaner exits

