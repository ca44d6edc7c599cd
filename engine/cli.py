"""Loupe's command line: the same engine as the app, no UI.

    python -m engine lr-find --data builtin:digits-names --json
    python -m engine train --data builtin:digits-names --schedule one_cycle --epochs 5 --out runs/digits --json
    python -m engine train --spec runs/digits/spec.json          # the same run again, the same numbers
    torchrun --nproc_per_node 2 -m engine train --spec runs/digits/spec.json   # data-parallel (engine/train/distributed.py)
    python -m engine spec --data ~/pets --arch resnet34         # the spec that flags make, as JSON
    python -m engine runs --json                                 # every run: app, command line, torchrun
    python -m engine predict --model runs/digits photo.png another.jpg
    python -m engine export --model runs/digits --zip digits.zip --onnx digits.onnx
    python -m engine health --data ~/pets --json                # duplicates, leaks, label conflicts, unreadable files
    python -m engine experiment --vary lr=1e-4,1e-3,1e-2 --json  # one run per value, same data and seed; verdicts
    python -m engine label-issues --data ~/pets --arch resnet18 --folds 3 --json   # likely wrong labels, never changed
    python -m engine report runs/digits --out report.html        # one self-contained HTML page to share
    python -m engine baseline --data builtin:digits-names --json  # closest-average accuracy (the book's chapter 4)
    python -m engine inside runs/digits photo.png --json         # one picture through the network, stage by stage

Ctrl-C (SIGINT) or SIGTERM while `train` trains stops the run at the end of the batch: it is recorded as
'interrupted' with its curves, its model is written if an epoch finished, and the exit code is 130 for Ctrl-C
(the shell's convention, 128 + 2) but 0 for SIGTERM (the way a service manager or a container asks a process to
stop: an orderly stop, not a failure). A second signal ends the process at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import typing
from dataclasses import replace
from pathlib import Path

import pandas as pd

from engine.train import distributed
from engine.data.augment import AugSettings
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.store.home import loupe_home
from engine.data.labels import parse_label_rule
from engine.train.learner import Callback
from engine.train.lr_suggest import compare
from engine.store.runs import RunStore
from engine.data.resolve import check_source, data_root, default_augment, prepare_source, resolve
from engine.spec import (DataSpec, LRFindSpec, RunSpec, default_text, load_spec, override, schema_field, setting_name,
                         setting_type, settings, validate)
from engine.data.split import SplitRule
from engine.store.jobs import RunControl
from engine.train.run import device_of, estimate_seconds, find_lr, format_duration, prepare_data, train_run

TABLE_COLUMNS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time")


# ---------------------------------------------------------------- flags that override a spec

def parse_split(text: str, root: Path) -> SplitRule:
    """`random[:VALID_PCT[:SEED]]`, `stratified[:VALID_PCT[:SEED]]`, `folder[:TRAIN:VALID]` or `csv:FILE:COLUMN`."""
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind in ("random", "stratified"):
            pct = float(parts[0]) if parts else SplitRule().valid_pct
            seed = int(parts[1]) if len(parts) > 1 else SplitRule().seed
            return SplitRule(kind="random", valid_pct=pct, seed=seed, stratify=kind == "stratified")
    except ValueError:
        raise UserError(f"Could not read the split '{text}': use random:{SplitRule().valid_pct:g}:{SplitRule().seed}") from None
    if kind == "folder":
        if parts and len(parts) != 2:
            raise UserError("A folder split looks like folder:train:valid")
        return SplitRule(kind="folder", train_name=parts[0], valid_name=parts[1]) if parts else SplitRule(kind="folder")
    if kind == "csv" and len(parts) >= 2:
        csv_file, column = ":".join(parts[:-1]), parts[-1]
        path = Path(csv_file) if Path(csv_file).is_absolute() else root / csv_file
        return SplitRule(kind="csv", csv_path=str(path), valid_col=column)
    raise UserError(f"Unknown split '{text}': use random[:PCT[:SEED]], stratified[:PCT[:SEED]], folder[:TRAIN:VALID] or csv:FILE:COLUMN.")


def parse_lr_slice(text: str) -> tuple[float, float]:
    """`1e-6:1e-4` → (1e-6, 1e-4)."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise UserError(f"Could not read the learning-rate slice '{text}': use LOW:HIGH, e.g. 1e-6:1e-4.") from None


def source_text(text: str) -> str:
    """A data source as the spec keeps it: builtin:KEY and fastai:KEY as they are, a folder as an absolute path."""
    if text.startswith(("builtin:", "fastai:")):
        return text
    return str(Path(text).expanduser().resolve())


FLAG_NAMES = {"data.source": "--data"}  # a flag named otherwise than its setting
FLAG_ALIASES = {"train.schedule": ("--method",), "train.keep_best": ("--save-best",)}  # older names, still read
FLAG_FORMS = {  # settings whose flag is text in a form of its own (parsed by spec_from_args)
    "data.label": "regex:PATTERN, path-regex:PATTERN, folder, grandparent, top-folder or csv:FILE:COLUMN",
    "data.split": "random[:PCT[:SEED]], stratified[:PCT[:SEED]], folder[:TRAIN:VALID] or csv:FILE:COLUMN",
}
FLAG_METAVARS = {"train.lr_slice": "LOW:HIGH"}


def flag_of(name: str) -> str:
    """The command-line flag of a setting ("train.lr_mult" → "--lr-mult")."""
    return FLAG_NAMES.get(name, "--" + name.rsplit(".", 1)[-1].replace("_", "-"))


def add_schema_flags(group, fields: dict[str, str], root: type = RunSpec) -> None:
    """A flag per setting of `fields` (argparse dest → dotted name): type, choices and help (with the default) from
    the schema; a yes/no setting gets --X and --no-X."""
    for dest, name in fields.items():
        f, t = schema_field(name, root), setting_type(name, root)
        flags = [flag_of(name), *FLAG_ALIASES.get(name, ())]
        if t is bool:
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(*flags, dest=dest, action="store_true", default=None,
                              help=f.metadata["help"] + (" (default)" if f.default else ""))
            pair.add_argument(f"--no-{flags[0][2:]}", dest=dest, action="store_false",
                              help=f.metadata["off"] + ("" if f.default else " (default)"))
            continue
        numbers = [o for o in (typing.get_args(t) or (t,)) if o in (int, float)]
        form = FLAG_FORMS.get(name)
        group.add_argument(*flags, dest=dest, type=numbers[0] if numbers else str, choices=f.metadata["choices"] or None,
                           metavar=FLAG_METAVARS.get(name),
                           help=f"{form + ': ' if form else ''}{f.metadata['help']} (default: {default_text(f)})"
                           .replace("%", "%%"))  # argparse formats help with %


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag that overrides a setting of the run spec (each defaults to 'not given'), made from the schema."""
    g = parser.add_argument_group("run spec (each flag overrides --spec, or Loupe's defaults)")
    g.add_argument("--spec", type=Path, help="start from this spec: a JSON file, or a run folder holding spec.json")
    add_schema_flags(g, FLAG_FIELDS)
    g.add_argument("--aug", choices=("fastai", "none"),
                   help=f"fastai's aug_transforms, or none (default: {default_text(schema_field('augment'))})")
    g.add_argument("--no-flip", action="store_true", default=None,
                   help=f"no left/right flips (digits, text); else as the augmentation's default "
                        f"({setting_name('augment.do_flip').lower()}: {default_text(schema_field('do_flip', AugSettings))})")


# flag (argparse dest) -> setting, for every setting of the spec but the augmentation (--aug, --no-flip) and the version
FLAG_FIELDS = {flag_of(name)[2:].replace("-", "_"): name for name in settings() if name not in ("augment", "version")}
LR_FIND_FLAGS = {f.name: f.name for f in dataclasses.fields(LRFindSpec)}  # lr-find's own flags


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The spec that --spec (or the defaults) and the flags make together."""
    base = load_spec(args.spec) if args.spec is not None else RunSpec()
    changes: dict = {}
    if args.data is not None:
        changes["data.source"] = source_text(args.data)
    data = DataSpec(source=changes.get("data.source", base.data.source))
    check_source(data.source)
    parsers = {"data.source": None, "data.label": lambda v: parse_label_rule(v, data_root(data)),
               "data.split": lambda v: parse_split(v, data_root(data)), "train.lr_slice": parse_lr_slice}
    for dest, name in FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None and name != "data.source":
            changes[name] = parsers[name](value) if name in parsers else value
    if args.aug is not None:
        changes["augment"] = AugSettings.off() if args.aug == "none" else None
    if args.no_flip:
        moved = "data.source" in changes and changes["data.source"] != base.data.source
        aug = changes.get("augment", None if moved else base.augment) or default_augment(data)
        changes["augment"] = replace(aug, do_flip=False, flip_vert=False)
    if "train.lr_slice" in changes and args.schedule is None and base.train.schedule != "one_cycle":
        raise UserError("--lr-slice unfreezes every layer and trains with fit_one_cycle: add --schedule one_cycle.")
    spec = override(base, changes)
    validate(spec)
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Loupe without the UI: find a learning rate, "
                                     "train, list runs, predict, export.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the run a spec (and flags) describe; print fastai's epoch table")
    add_spec_flags(train)
    train.add_argument("--out", type=Path, help="the run folder (default LOUPE_HOME/runs/<id>): model.pt, labels.json, "
                                                "preprocessing.json, run.json, spec.json")
    train.add_argument("--json", action="store_true", help="end with one JSON line of results")

    spec = sub.add_parser("spec", help="print the spec that the flags make (settings left automatic filled in), as JSON")
    add_spec_flags(spec)

    lr_find = sub.add_parser("lr-find", help="run fastai's LR finder and print its suggestions")
    add_spec_flags(lr_find)
    finder = lr_find.add_argument_group("the LR finder")
    add_schema_flags(finder, LR_FIND_FLAGS, LRFindSpec)
    lr_find.set_defaults(**dataclasses.asdict(LRFindSpec()))
    lr_find.add_argument("--json", action="store_true", help="end with one JSON line of results")

    runs = sub.add_parser("runs", help="list the runs database (LOUPE_HOME/runs.sqlite): app, command-line and torchrun runs")
    runs.add_argument("--json", action="store_true", help="one JSON line: a list of runs")

    pred = sub.add_parser("predict", help="top classes of images, with an exported model (a run folder)")
    pred.add_argument("--model", type=Path, required=True, help="folder holding model.pt, labels.json, preprocessing.json")
    pred.add_argument("images", nargs="+", type=Path, help="image files")
    pred.add_argument("--top", type=int, default=5, help="how many classes to show per image")
    pred.add_argument("--json", action="store_true", help="one JSON line: [{image, top: [[class, p], …]} or {image, error}]")

    export = sub.add_parser("export", help="package an exported model as a zip (with predict.py) and/or ONNX")
    export.add_argument("--model", type=Path, required=True, help="folder holding model.pt, labels.json, preprocessing.json")
    export.add_argument("--zip", type=Path, default=None, help="write the zip here")
    export.add_argument("--onnx", type=Path, default=None, help="write the ONNX file here")
    export.add_argument("--json", action="store_true", help="end with one JSON line of what was written")

    health = sub.add_parser("health", help="check the data: duplicates, near duplicates, one picture under two labels, "
                                           "train/valid leaks, class imbalance, unreadable files and broken links")
    add_spec_flags(health)
    health.add_argument("--json", action="store_true", help="print one JSON line instead of the report")

    experiment = sub.add_parser("experiment", help="one run per value of one setting (same data, split and seed), one "
                                                   "after another; print each run's accuracy, time and verdict")
    add_spec_flags(experiment)
    experiment.add_argument("--vary", required=True, metavar="NAME=V1,V2,…",
                            help="the setting and its 2 to 4 values: lr=1e-4,1e-3,1e-2; aug=off,0.5,1,2 (strength: "
                                 "0 to 2 times fastai's augmentation, or on/off); size=14,28; arch=small,resnet18; "
                                 "epochs=1,3,6")
    experiment.add_argument("--json", action="store_true",
                            help="one JSON line: {runs: [{value, accuracy, valid_loss, seconds, verdict, run_id}, …], "
                                 "experiment: id}")
    issues = sub.add_parser("label-issues", help="likely wrong labels: k models each trained (with the run's settings) "
                                                 "on all but one fold judge the images of that fold; changes nothing")
    add_spec_flags(issues)
    issues.add_argument("--folds", type=int, default=None, metavar="K",
                        help="how many folds, that is models (default 3); each trains on K − 1 of K parts")
    issues.add_argument("--json", action="store_true",
                        help='one JSON line: {"oof_accuracy", "needed_accuracy", "n_ranked", '
                             '"flagged": [{"file", "label", "suggested", "confidence"}, …], "message"}')
    report = sub.add_parser("report", help="write a run's report: one self-contained HTML file (data, settings, curves, "
                                           "verdict, confusion, top losses, replay command) that needs no network")
    report.add_argument("folder", type=Path, help="the run folder (spec.json, model.pt, …)")
    report.add_argument("--out", type=Path, default=None, help="the HTML file to write (default: FOLDER/report.html)")
    report.add_argument("--json", action="store_true", help="end with one JSON line: {out, bytes}")
    baseline = sub.add_parser("baseline", help="the simplest baseline: each validation picture gets the class of the "
                                               "closest average training picture (28×28); print its accuracy")
    add_spec_flags(baseline)
    baseline.add_argument("--json", action="store_true",
                          help='one JSON line: {"accuracy_l1", "accuracy_l2", "majority", "n_valid", "classes", …}')
    inside = sub.add_parser("inside", help="follow one picture through a run's model: each stage's output shape and "
                                           "most active channels, from input to head, and the prediction")
    inside.add_argument("folder", type=Path, help="the run folder (model.pt, labels.json, preprocessing.json)")
    inside.add_argument("image", type=Path, help="a picture file")
    inside.add_argument("--json", action="store_true", help='one JSON line: {"layers": [{"name", "shape": [C, H, W], '
                                                            '"top_channels"}, …], "prediction": {"class", "probability", "top"}}')
    return parser


# ---------------------------------------------------------------- commands

def _print_download(key: str):
    last = [-1]

    def progress(done: int, total: int | None) -> None:
        pct = int(100 * done / total) if total else -1
        if pct != last[0] and (pct % 10 == 0 or pct == 100):
            print(f"downloading {key}: {pct}%" if total else f"downloading {key}: {done / 1e6:.0f} MB", file=sys.stderr)
            last[0] = pct
    return progress


def _fmt(row: dict) -> str:
    minutes, seconds = divmod(int(round(row["time"])), 60)
    cells = [str(row["epoch"]), *(f"{row[k]:.6f}" for k in TABLE_COLUMNS[1:5]), f"{minutes:02d}:{seconds:02d}"]
    return "".join(c.ljust(12) for c in cells)


class EpochTable(Callback):
    """Prints fastai's epoch table as the run goes."""

    def before_fit(self, learn, logs):
        if not getattr(self, "printed", False):
            print("".join(c.ljust(12) for c in TABLE_COLUMNS), flush=True)
            self.printed = True

    def after_epoch(self, learn, logs):
        print(_fmt(logs), flush=True)

    def after_fit(self, learn, logs):
        if learn.fit_note:
            print(learn.fit_note, file=sys.stderr)


def signal_exit_code(signum: int) -> int:
    """130 after Ctrl-C (128 + SIGINT, the shell's convention); 0 after SIGTERM, an orderly stop asked from outside."""
    return 130 if signum == signal.SIGINT else 0


class Interrupted(KeyboardInterrupt):
    """The process was asked to end at once (a second signal, or one before training began)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = signal_exit_code(signum)


class StopOnSignal(Callback):
    """While a run trains, SIGINT and SIGTERM interrupt it through its `control` at the end of the batch (the run
    ends 'interrupted'); before training begins, or the second time, they end the process at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.control = RunControl()  # what the run (or every run of an experiment) obeys
        self.signum: int | None = None
        self.training = False
        self.quiet = False  # say nothing (a torchrun rank other than 0)
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def before_fit(self, learn, logs):
        self.training = True

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None or not self.training:
            raise Interrupted(self.signum or signum)
        self.signum = signum
        self.control.interrupt()
        if not self.quiet:
            print(f"{signal.Signals(signum).name}: stopping at the end of this batch (again to quit at once)…",
              file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        return signal_exit_code(self.signum) if self.signum is not None else 0


def cmd_train(args: argparse.Namespace) -> dict:
    """Train; under torchrun, every process trains its part and rank 0 alone records, prints and writes the folder."""
    spec = spec_from_args(args)
    ddp = distributed.from_env()
    main_rank = ddp is None or ddp.is_main
    if not main_rank:
        sys.stdout = open(os.devnull, "w")  # the epoch table and the JSON line are rank 0's to print
    if spec.data.kind == "fastai" and main_rank:  # the other ranks fetch it once rank 0 has
        prepare_source(spec, progress=_print_download(spec.data.key.upper()))
    cache = PresizeCache(max_entries=1)
    data, estimated = spec, None
    if ddp is None:  # a few timed steps: what this run should take here (under torchrun, each rank's part differs)
        data = prepare_data(spec, cache)  # prepared once: the estimate times it, then the run trains on it
        estimated = estimate_seconds(data, cache)
        print(f"Estimated time: about {format_duration(estimated)} (from a few timed steps on this computer)",
              file=sys.stderr, flush=True)
    store = RunStore() if main_rank else None
    try:
        if ddp is not None:
            distributed.init(ddp, device_of(spec))
        with StopOnSignal() as signals:
            signals.quiet = not main_rank
            # under torchrun a stop comes from a signal, to this rank or another one: the fit loop shares it
            result = train_run(data, cache, store, source="cli" if ddp is None else "torchrun",
                               out_dir=args.out, callbacks=[*([EpochTable()] if main_rank else []), signals],
                               control=signals.control, dist=ddp, estimated_s=estimated)
    finally:
        if store is not None:
            store.close()
        distributed.close()
    if result["status"] == "interrupted":
        result["exit_code"] = signals.exit_code
    if not main_rank:
        return result
    if result["status"] == "interrupted":
        kept = (f"model from epoch {result['kept_epoch']} and spec.json in {result['out']}" if result["out"]
                else "no model (no epoch finished)")
        print(f"run #{result['run_id']} interrupted after {result['epochs']} epoch(s): its curves are in the runs "
              f"database; {kept}", file=sys.stderr)
    elif result["out"]:
        print(f"run #{result['run_id']}: model and spec.json in {result['out']}", file=sys.stderr)
    return result


def cmd_spec(args: argparse.Namespace) -> dict:
    spec = resolve(spec_from_args(args))
    return spec.to_dict()


def cmd_lr_find(args: argparse.Namespace) -> dict:
    if args.num_it < 1:
        raise UserError(f"--num-it must be a positive number (got {args.num_it}).")
    spec = spec_from_args(args)
    finder = LRFindSpec(start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it)
    found = find_lr(spec, PresizeCache(max_entries=1), finder, note=lambda text: print(text, file=sys.stderr))
    where = compare(found.suggestions)
    for s in found.suggestions.values():
        print(f"{s.name:>8}: {s.lr:.2e}  {s.explanation} {where[s.name]}")
    if not found.suggestions:
        print("The loss curve is too short to suggest a learning rate (too few batches?).", file=sys.stderr)
    return {
        "suggestions": {k: s.lr for k, s in found.suggestions.items()},
        "lrs": found.lrs, "losses": [x if math.isfinite(x) else None for x in found.losses],
        "stopped_early": found.stopped_early,
    }


def cmd_runs(args: argparse.Namespace) -> list[dict]:
    store = RunStore()
    try:
        table = store.runs()
    finally:
        store.close()
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"id": int(r.id), "time": r.date.isoformat() + "Z", "source": r.source, "data": r.data,
                     "arch": r.arch, "schedule": r.schedule, "status": r.status,
                     "accuracy": None if pd.isna(r.accuracy) else float(r.accuracy),
                     "kept_epoch": None if pd.isna(r.kept_epoch) else int(r.kept_epoch), "epochs": int(r.epochs),
                     "seconds": None if pd.isna(r.seconds) else round(float(r.seconds), 2), "folder": r.weights_path})
    if not args.json:
        if not rows:
            print(f"No runs recorded yet in {loupe_home() / 'runs.sqlite'}.")
        for row in rows:
            accuracy = f"{row['accuracy']:.1%}" if row["accuracy"] is not None else "-"
            kept = f"model from epoch {row['kept_epoch']}" if row["kept_epoch"] is not None else "no model"
            print(f"#{row['id']:<4} {row['time'][:19]}  {row['source']:<8} {row['data'][:28]:<28} {row['arch']:<9} "
                  f"{row['status']:<11} {accuracy:>6}  {kept}")
    return rows


def cmd_predict(args: argparse.Namespace) -> dict:
    """Top classes of each image; unreadable files are reported and skipped (exit code 1 if any)."""
    from engine.train.export import load_run, predict
    from engine.data.images import open_image

    if args.top < 1:
        raise UserError(f"--top must be a positive number (got {args.top}).")
    exported = load_run(args.model)
    rows, images = [], []
    for path in args.images:
        try:
            images.append(open_image(path))
            rows.append({"image": str(path)})
        except (ValueError, OSError) as e:
            print(f"error: {path} is not an image Loupe can read ({e}).", file=sys.stderr)
            rows.append({"image": str(path), "error": str(e)})
    tops = iter(predict(exported, images, k=args.top))
    for row in rows:
        if "error" not in row:
            row["top"] = [[c, round(p, 6)] for c, p in next(tops)]
            if not args.json:
                print(f"{row['image']}: " + ", ".join(f"{c} {p:.1%}" for c, p in row["top"]))
    return {"predictions": rows, "failed": sum("error" in r for r in rows)}


def cmd_export(args: argparse.Namespace) -> dict:
    """Package an exported run folder as a zip and/or ONNX."""
    from engine.train.export import export_onnx, export_zip, load_run

    if args.zip is None and args.onnx is None:
        raise UserError("Say what to write: --zip FILE, --onnx FILE, or both.")
    exported = load_run(args.model)  # checks the folder before anything is written
    written = {}
    if args.zip is not None:
        export_zip(args.model, dest=args.zip)
        written["zip"] = str(args.zip)
    if args.onnx is not None:
        export_onnx(exported.model, exported.preprocessing, args.onnx)
        written["onnx"] = str(args.onnx)
    for kind, path in written.items():
        print(f"wrote {kind}: {path}", file=sys.stderr)
    return written


def _data_of(args: argparse.Namespace):
    """The flags' data set, read: (resolved spec, folder scan, labelled items, presized pixels)."""
    from engine.data.loaders import load_items
    from engine.data.sources import scan_folder

    spec = spec_from_args(args)
    root = prepare_source(spec, progress=_print_download(spec.data.key.upper()) if spec.data.kind == "fastai" else None)
    scan = scan_folder(root)
    spec = resolve(spec, scan)
    items = load_items(spec.data, scan)
    return spec, scan, items, PresizeCache(max_entries=1).get(items.scanned_paths, spec.data.presize,
                                                              spec.data.presize_method)


def cmd_health(args: argparse.Namespace) -> dict:
    """The data health check of the data set the spec names; the JSON's keys: engine.data.health.HealthCheck.to_dict."""
    from engine.data.health import health_check, report_text

    spec, scan, items, images = _data_of(args)
    check = health_check(items, images, broken_links=scan.broken_links, unreadable_folders=scan.unreadable)
    if not args.json:
        print(report_text(check))
    return check.to_dict()


class EpochLines(Callback):
    """Prints each epoch of an experiment's run on stderr (stdout is kept for the results)."""

    def after_epoch(self, learn, logs):
        print(f"  epoch {logs['epoch']}: train_loss {logs['train_loss']:.4f}  valid_loss {logs['valid_loss']:.4f}  "
              f"accuracy {logs['accuracy']:.1%}", file=sys.stderr, flush=True)


def cmd_experiment(args: argparse.Namespace) -> dict:
    """One run per value of the setting --vary names; the results (and verdicts) of every run that started."""
    from engine.train.experiment import plan_experiment, parse_vary, run_experiment

    setting, values = parse_vary(args.vary)
    spec = spec_from_args(args)
    if spec.data.kind == "fastai":
        prepare_source(spec, progress=_print_download(spec.data.key.upper()))
    plan = plan_experiment(spec, setting, values)
    print(f"experiment {plan.id}: {len(plan.specs)} runs, seed {plan.specs[0].train.seed}", file=sys.stderr)

    def on_run(i: int, plan) -> None:
        print(f"run {i + 1} of {len(plan.specs)}: {plan.labels[i]}", file=sys.stderr, flush=True)

    store = RunStore()
    try:
        with StopOnSignal() as signals:
            result = run_experiment(plan, PresizeCache(max_entries=1), store, source="cli",
                                    callbacks=[EpochLines(), signals], control=signals.control, on_run=on_run)
    finally:
        store.close()
    labels = [row["label"] for row in result["runs"]]
    keys = ("value", "accuracy", "valid_loss", "seconds", "verdict", "verdict_text", "run_id", "status")
    result["runs"] = [{k: row[k] for k in keys} for row in result["runs"]]
    if result["status"] == "interrupted":
        result["exit_code"] = signals.exit_code
        print(f"experiment {plan.id} interrupted: the runs so far are in the runs database", file=sys.stderr)
    if not args.json:
        print(f"{'value':<14}{'accuracy':>9}{'valid_loss':>12}{'time':>9}  verdict")
        for label, row in zip(labels, result["runs"]):
            accuracy = f"{row['accuracy']:.1%}" if row["accuracy"] is not None else "-"
            loss = "-" if row["valid_loss"] is None else f"{row['valid_loss']:.4f}" if row["valid_loss"] < 1e4 \
                else f"{row['valid_loss']:.3g}"
            seconds = f"{row['seconds']:.1f} s" if row["seconds"] is not None else "-"
            print(f"{label:<14}{accuracy:>9}{loss:>12}{seconds:>9}  {row['verdict_text']}")
    return result


def cmd_label_issues(args: argparse.Namespace) -> dict:
    """Likely wrong labels of the data set the spec names, by models trained as the spec says; nothing is changed."""
    from engine.results.label_issues import DEFAULT_K, find_likely_label_errors, percent_sure

    spec = spec_from_args(args)
    if spec.data.kind == "fastai":
        prepare_source(spec, progress=_print_download(spec.data.key.upper()))
    k = DEFAULT_K if args.folds is None else args.folds
    shown = [-1]

    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(1, total)
        if pct // 10 != shown[0]:
            shown[0] = pct // 10
            print(f"training {k} models: {pct}%", file=sys.stderr, flush=True)

    table = find_likely_label_errors(spec, PresizeCache(max_entries=1), k=k, progress=progress)
    flagged = table[table["likely_error"]]
    result = {"oof_accuracy": table.attrs["oof_accuracy"], "needed_accuracy": table.attrs["needed_accuracy"],
              "n_ranked": len(table),
              "flagged": [{"file": r.file, "label": r.label, "suggested": r.suggested,
                           "confidence": round(float(r.confidence), 4)} for r in flagged.itertuples()],
              "message": table.attrs["message"]}
    if not args.json:
        print(result["message"])
        for row in result["flagged"]:
            print(f"{row['file']}: {row['label']} → {row['suggested']} ({percent_sure(row['confidence'])} sure)")
    return result


def cmd_report(args: argparse.Namespace) -> dict:
    """Write the run's report (engine/results/report.py)."""
    from engine.results.report import write_report

    out = write_report(args.folder, args.out or args.folder / "report.html")
    print(f"wrote report: {out}", file=sys.stderr)
    return {"out": str(out), "bytes": out.stat().st_size}


def cmd_baseline(args: argparse.Namespace) -> dict:
    """Closest-average accuracy, by mean absolute (L1) and root-mean-square (L2) difference (engine/results/learning.py)."""
    from engine.results.learning import baseline

    _, _, items, images = _data_of(args)
    result = baseline(items, images).to_dict()
    if not args.json:
        print(f"closest average, {result['n_valid']:,} validation pictures: {result['accuracy_l1']:.1%} by mean absolute "
              f"difference, {result['accuracy_l2']:.1%} by root-mean-square difference "
              f"(always the largest class: {result['majority']:.1%})")
    return result


def cmd_inside(args: argparse.Namespace) -> dict:
    """One picture through a run's model (engine/results/inside.py): each stage's shape and top channels."""
    from engine.results.inside import look_inside_file
    from engine.train.export import load_run

    inside = look_inside_file(load_run(args.folder), args.image)
    result = inside.to_dict()
    if not args.json:
        for layer in result["layers"][:-1]:
            shape = " × ".join(map(str, layer["shape"]))
            print(f"{layer['name']:<9} {shape:<16} most active channels: {', '.join(map(str, layer['top_channels']))}")
        print(f"{'head':<9} {len(inside.classes)} scores{'':<7} highest: "
              + ", ".join(inside.classes[c] for c in result["layers"][-1]["top_channels"]))
        p = result["prediction"]
        print(f"prediction: {p['class']} ({p['probability']:.1%})")
    return result


COMMANDS = {"train": cmd_train, "spec": cmd_spec, "lr-find": cmd_lr_find, "runs": cmd_runs, "predict": cmd_predict,
            "export": cmd_export, "health": cmd_health, "experiment": cmd_experiment,
            "label-issues": cmd_label_issues, "report": cmd_report, "baseline": cmd_baseline,
            "inside": cmd_inside}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad arguments: usage message, exit code 2
    try:
        result = COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted ({str(e) or 'SIGINT'})", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    if args.command == "spec":
        print(json.dumps(result, indent=2), flush=True)
    elif getattr(args, "json", False):
        print(json.dumps(result["predictions"] if args.command == "predict" else result), flush=True)
    if args.command in ("train", "experiment") and result["status"] == "interrupted":
        return result["exit_code"]
    return 1 if args.command == "predict" and result["failed"] else 0
