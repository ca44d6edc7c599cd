"""Loupe's command line: the same engine as the app, no UI.

    python -m engine lr-find --data builtin:digits-names --label 'regex:^(.+)_\\d+\\.png$' --json
    python -m engine train --data builtin:digits-names --label 'regex:^(.+)_\\d+\\.png$' --arch small \\
        --no-pretrained --epochs 5 --method one_cycle --out runs/digits --json
    python -m engine predict --model runs/digits photo.png another.jpg
    python -m engine export --model runs/digits --zip digits.zip --onnx digits.onnx
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from engine.augment import AugSettings
from engine.builtin import BUILTINS, ensure_builtin
from engine.data import DataConfig, PresizeCache, suggest_rules
from engine.device import default_device
from engine.errors import UserError
from engine.labels import LabelRule, parse_label_rule
from engine.learner import FunctionCallback, Learner
from engine.models import ARCHS
from engine.sources import FASTAI_DATASETS, dataset_path, download_dataset, scan_folder
from engine.split import SplitRule
from engine.training import TrainSettings, add_stopping_callbacks, build_learner, fit

TABLE_COLUMNS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time")


# ---------------------------------------------------------------- argument parsing

def parse_source(text: str) -> tuple[Path, str, LabelRule | None, SplitRule | None, AugSettings]:
    """`builtin:KEY`, `fastai:KEY` (downloaded once) or a folder path → (root, name, default label, split and augmentation)."""
    if text.startswith("builtin:"):
        key = text.split(":", 1)[1]
        if key not in BUILTINS:
            raise UserError(f"Unknown built-in data set '{key}'. Choose one of: {', '.join(BUILTINS)}.")
        b = BUILTINS[key]
        return ensure_builtin(key), b.title, b.label_rule, b.split_rule, b.aug
    if text.startswith("fastai:"):
        key = text.split(":", 1)[1].upper()
        if key not in FASTAI_DATASETS:
            raise UserError(f"Unknown fastai data set '{key}'. Choose one of: {', '.join(FASTAI_DATASETS)}.")
        download_dataset(key, progress=_print_download(key))
        remote = FASTAI_DATASETS[key]
        return dataset_path(key) / remote.image_subdir, key, None, None, AugSettings()
    return Path(text).expanduser(), Path(text).name, None, None, AugSettings()


def parse_split(text: str, root: Path) -> SplitRule:
    """`random[:VALID_PCT[:SEED]]`, `stratified[:VALID_PCT[:SEED]]`, `folder[:TRAIN:VALID]` or `csv:FILE:COLUMN`."""
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind in ("random", "stratified"):
            pct = float(parts[0]) if parts else 0.2
            seed = int(parts[1]) if len(parts) > 1 else 42
            return SplitRule(kind="random", valid_pct=pct, seed=seed, stratify=kind == "stratified")
    except ValueError:
        raise UserError(f"Could not read the split '{text}': use random:0.2:42") from None
    if kind == "folder":
        if parts and len(parts) != 2:
            raise UserError("A folder split looks like folder:train:valid")
        return SplitRule(kind="folder", train_name=parts[0], valid_name=parts[1]) if parts else SplitRule(kind="folder")
    if kind == "csv" and len(parts) >= 2:
        csv_file, column = ":".join(parts[:-1]), parts[-1]
        path = Path(csv_file) if Path(csv_file).is_absolute() else root / csv_file
        return SplitRule(kind="csv", csv_path=str(path), valid_col=column)
    raise UserError(f"Unknown split '{text}': use random[:PCT[:SEED]], stratified[:PCT[:SEED]], folder[:TRAIN:VALID] or csv:FILE:COLUMN.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Loupe without the UI: find a learning rate, train, export.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True, help="a folder, builtin:digits-names, builtin:digits-folders or fastai:KEY")
    common.add_argument("--label", help="regex:PATTERN, path-regex:PATTERN, folder or csv:FILE:COLUMN (default: guessed)")
    common.add_argument("--split", help="random[:PCT[:SEED]] (default random:0.2:42), stratified…, folder[:TRAIN:VALID], csv:FILE:COLUMN")
    common.add_argument("--arch", default="small", choices=list(ARCHS))
    pre = common.add_mutually_exclusive_group()
    pre.add_argument("--pretrained", dest="pretrained", action="store_true", default=None, help="ImageNet weights (resnets)")
    pre.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="train from scratch")
    common.add_argument("--size", type=int, default=None, help="image size the model sees (default 28 for built-ins, else 224)")
    common.add_argument("--presize", type=int, default=None, help="size images are decoded to once (default ≈ 1.15 × size)")
    common.add_argument("--bs", type=int, default=64, help="batch size")
    common.add_argument("--aug", choices=("fastai", "none"), default="fastai",
                        help="fastai's aug_transforms defaults (no flips for the built-in digits), or none")
    common.add_argument("--no-flip", action="store_true", help="no left/right flips (digits, text)")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    common.add_argument("--seed", type=int, default=None, help="seed for batch order, augmentation and weights")
    common.add_argument("--json", action="store_true", help="end with one JSON line of results")

    lr_find = sub.add_parser("lr-find", parents=[common], help="run fastai's LR finder and print its suggestions")
    lr_find.add_argument("--num-it", type=int, default=100)
    lr_find.add_argument("--start-lr", type=float, default=1e-7)
    lr_find.add_argument("--end-lr", type=float, default=10.0)

    train = sub.add_parser("train", parents=[common], help="train, print fastai's epoch table, export the run")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--method", choices=("fine_tune", "one_cycle"), default="fine_tune")
    train.add_argument("--lr", type=float, default=None, help="base_lr for fine_tune (2e-3), lr_max for one_cycle (1e-3)")
    train.add_argument("--freeze-epochs", type=int, default=1)
    train.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    train.add_argument("--save-best", action="store_true", help="restore the best epoch's weights at the end")
    train.add_argument("--out", type=Path, default=None, help="folder to export model.pt, labels.json, preprocessing.json")

    pred = sub.add_parser("predict", help="top classes of images, with an exported model (a train --out folder)")
    pred.add_argument("--model", type=Path, required=True, help="folder holding model.pt, labels.json, preprocessing.json")
    pred.add_argument("images", nargs="+", type=Path, help="image files")
    pred.add_argument("--top", type=int, default=5, help="how many classes to show per image")
    pred.add_argument("--json", action="store_true", help="one JSON line: [{image, top: [[class, p], …]} or {image, error}]")

    export = sub.add_parser("export", help="package an exported model as a zip (with predict.py) and/or ONNX")
    export.add_argument("--model", type=Path, required=True, help="folder holding model.pt, labels.json, preprocessing.json")
    export.add_argument("--zip", type=Path, default=None, help="write the zip here")
    export.add_argument("--onnx", type=Path, default=None, help="write the ONNX file here")
    export.add_argument("--json", action="store_true", help="end with one JSON line of what was written")
    return parser


# ---------------------------------------------------------------- building a learner

def _print_download(key: str):
    last = [-1]

    def progress(done: int, total: int | None) -> None:
        pct = int(100 * done / total) if total else -1
        if pct != last[0] and (pct % 10 == 0 or pct == 100):
            print(f"downloading {key}: {pct}%" if total else f"downloading {key}: {done / 1e6:.0f} MB", file=sys.stderr)
            last[0] = pct
    return progress


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The training settings the arguments ask for (fastai's defaults for the rest)."""
    method = getattr(args, "method", "fine_tune")
    return TrainSettings(
        arch=args.arch, pretrained=args.pretrained if args.pretrained is not None else args.arch != "small",
        method=method, epochs=getattr(args, "epochs", 1),
        lr=getattr(args, "lr", None) or (2e-3 if method == "fine_tune" else 1e-3),
        freeze_epochs=getattr(args, "freeze_epochs", 1), patience=getattr(args, "patience", 0),
        save_best=getattr(args, "save_best", False), seed=args.seed,
    )


def build(args: argparse.Namespace) -> tuple[Learner, DataConfig, str]:
    """Data, model and learner from the parsed arguments; the third value is a note about weights."""
    for option in ("size", "presize", "bs", "epochs", "num_it"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be a positive number (got {value}).")
    if getattr(args, "lr", None) is not None and not args.lr > 0:
        raise UserError(f"--lr must be above 0 (got {args.lr}).")
    root, name, label_default, split_default, aug_default = parse_source(args.data)
    scan = scan_folder(root)
    guessed_label, guessed_split = suggest_rules(scan)
    label = parse_label_rule(args.label, root) if args.label else (label_default or guessed_label)
    split = parse_split(args.split, root) if args.split else (split_default or guessed_split)
    size = args.size if args.size is not None else (28 if args.data.startswith("builtin:") else 224)
    presize = args.presize if args.presize is not None else max(size, round(size * 1.15))
    aug = AugSettings.off() if args.aug == "none" else aug_default
    if args.no_flip:
        aug = replace(aug, do_flip=False)
    config = DataConfig(root=str(root), name=name, label=label, split=split, size=size, presize=presize, bs=args.bs, aug=aug)
    device = default_device() if args.device == "auto" else torch.device(args.device)
    # the command line has the machine to itself: every core trains
    learn, info = build_learner(config, settings_from(args), PresizeCache(max_entries=1), device=device, cpu_threads=None)
    return learn, config, info.message


# ---------------------------------------------------------------- commands

def _fmt(row: dict) -> str:
    minutes, seconds = divmod(int(round(row["time"])), 60)
    cells = [str(row["epoch"]), *(f"{row[k]:.6f}" for k in TABLE_COLUMNS[1:5]), f"{minutes:02d}:{seconds:02d}"]
    return "".join(c.ljust(12) for c in cells)


def cmd_train(args: argparse.Namespace) -> dict:
    learn, config, note = build(args)
    if note:
        print(note, file=sys.stderr)
    print("".join(c.ljust(12) for c in TABLE_COLUMNS), flush=True)

    def on_event(event: str, logs: dict) -> None:
        if event == "after_epoch":
            print(_fmt(logs), flush=True)
        elif event == "after_fit" and logs.get("note"):
            print(logs["note"], file=sys.stderr)

    learn.callbacks.append(FunctionCallback(on_event))
    settings = settings_from(args)
    add_stopping_callbacks(learn, settings)
    start = time.perf_counter()
    logs = fit(learn, settings)
    seconds = time.perf_counter() - start
    final = learn.validate()  # of the weights the run ends with (the best epoch's with --save-best)
    result = {
        "accuracy": final["accuracy"], "valid_loss": final["valid_loss"], "error_rate": final["error_rate"],
        "epochs": len(learn.recorder.epochs), "seconds": round(seconds, 2),
        "images_per_s": round(learn.recorder.images_per_s, 1), "arch": args.arch, "pretrained": learn.pretrained,
        "status": logs["status"], "classes": len(learn.dls.classes), "device": str(learn.device),
    }
    if args.out:
        from engine.export import export_run

        out = export_run(args.out, learn.model, args.arch, learn.dls.classes, config,
                         extra={**result, "epochs_table": learn.recorder.epochs})
        result["out"] = str(out)
    return result


def cmd_lr_find(args: argparse.Namespace) -> dict:
    learn, _, note = build(args)
    if note:
        print(note, file=sys.stderr)
    if learn.pretrained:
        learn.freeze()  # as fastai: the finder runs on the learner as fine_tune will start it
    found = learn.lr_find(start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it)
    for s in found.suggestions.values():
        print(f"{s.name:>8}: {s.lr:.2e}  {s.explanation}")
    if not found.suggestions:
        print("The loss curve is too short to suggest a learning rate (too few batches?).", file=sys.stderr)
    return {
        "suggestions": {k: s.lr for k, s in found.suggestions.items()},
        "lrs": found.lrs, "losses": [x if math.isfinite(x) else None for x in found.losses],
        "stopped_early": found.stopped_early,
    }


def cmd_predict(args: argparse.Namespace) -> dict:
    """Top classes of each image; unreadable files are reported and skipped (exit code 1 if any)."""
    from engine.export import load_run, predict
    from engine.images import open_image

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
    from engine.export import export_onnx, export_zip, load_run

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


COMMANDS = {"train": cmd_train, "lr-find": cmd_lr_find, "predict": cmd_predict, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad arguments: usage message, exit code 2
    try:
        result = COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result["predictions"] if args.command == "predict" else result), flush=True)
    return 1 if args.command == "predict" and result["failed"] else 0
