"""Classify images with a model exported from Loupe. Needs only torch, torchvision, pillow and numpy.

    python predict.py image.png [more images…]          the 5 most likely classes of each image
    python predict.py --json image.png photo.jpg         the same as JSON: [{"image": …, "top": [[class, prob], …]}]

The model files (model.pt, labels.json, preprocessing.json) are read from the folder holding this script,
or from the folder given with --model. Images are prepared exactly as Loupe validates: upright (EXIF),
RGB with transparency on white, presized to a square (centre crop or squish), resized, normalised.
A file that is not a readable image gets a message on stderr and the exit code 1; the others are still classified.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

SMALL_CHANNELS = (32, 64, 128, 256)
RESNETS = ("resnet18", "resnet34", "resnet50")
POOLS = ("max_avg", "avg_max")  # the head's concat-pool order; exports without "pool" are "avg_max"


# ---------------------------------------------------------------- the model (the same layers as Loupe's)

class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling to 1×1, side by side: [B, C, H, W] -> [B, 2C, 1, 1], in the order `order` names."""

    def __init__(self, order: str) -> None:
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.cat([mx, avg] if self.order == "max_avg" else [avg, mx], dim=1)


def create_head(n_features: int, n_classes: int, pool: str) -> nn.Sequential:
    """fastai's head: concat pool, then BatchNorm-Dropout-Linear twice (512 hidden units)."""
    nf = 2 * n_features
    return nn.Sequential(
        AdaptiveConcatPool2d(pool), nn.Flatten(),
        nn.BatchNorm1d(nf), nn.Dropout(0.25), nn.Linear(nf, 512, bias=False), nn.ReLU(inplace=True),
        nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, n_classes, bias=False),
    )


def small_body() -> nn.Sequential:
    """Blocks of conv3×3 stride 2 → BatchNorm → ReLU."""
    blocks, c_in = [], 3
    for c_out in SMALL_CHANNELS:
        blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)))
        c_in = c_out
    return nn.Sequential(*blocks)


def create_model(arch: str, n_classes: int, pool: str) -> nn.Module:
    """`nn.Sequential(body, head)` with random weights, ready for the exported state dict."""
    if pool not in POOLS:
        raise SystemExit(f"error: unknown head layout {pool!r} in preprocessing.json")
    if arch == "small":
        body, n_features = small_body(), SMALL_CHANNELS[-1]
    elif arch in RESNETS:
        import torchvision  # only the resnets need it, and importing it takes seconds

        net = getattr(torchvision.models, arch)(weights=None)
        body, n_features = nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
    else:
        raise SystemExit(f"error: unknown model {arch!r} in preprocessing.json")
    return nn.Sequential(body, create_head(n_features, n_classes, pool))


def load_model(folder: Path) -> tuple[nn.Module, list[str], dict]:
    """The exported model in eval mode, its classes and its preprocessing."""
    try:
        classes = json.loads((folder / "labels.json").read_text())
        prep = json.loads((folder / "preprocessing.json").read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read the model files in {folder}: {e}")
    model = create_model(prep["arch"], len(classes), prep.get("pool", "avg_max"))
    model.load_state_dict(state)
    return model.eval(), classes, prep


# ---------------------------------------------------------------- preprocessing (Loupe's validation path)

def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency goes on white, 16-bit and float images are stretched to 0..255."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def presize(img: Image.Image, size: int, method: str) -> Image.Image:
    """Square size×size: 'crop' scales the short side then centre-crops, 'squish' ignores the aspect ratio."""
    if method == "squish":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)


def preprocess(img: Image.Image, prep: dict) -> torch.Tensor:
    """A PIL image -> normalised float batch [1, 3, size, size]."""
    square = presize(to_rgb(ImageOps.exif_transpose(img)), prep["presize"], prep["method"])
    x = torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1)[None].float()  # [1, 3, presize, presize]
    # bilinear resize through grid_sample at the output pixel centres, as Loupe's batches are made
    size = prep["size"]
    v = (torch.arange(size, dtype=torch.float32) * 2 + 1 - size) / size
    ys, xs = torch.meshgrid(v, v, indexing="ij")
    grid = torch.stack([xs, ys], dim=-1)[None]  # [1, size, size, 2]
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).div(255).clamp(0, 1)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(-1, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------- the command

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with a model exported from Loupe.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--top", type=int, default=5, help="how many classes to show per image (default 5)")
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parent,
                        help="folder holding model.pt, labels.json, preprocessing.json (default: this script's)")
    args = parser.parse_args(argv)
    model, classes, prep = load_model(args.model)
    k = max(1, min(args.top, len(classes)))
    results, status = [], 0
    for path in args.images:
        try:
            with Image.open(path) as img:
                x = preprocess(img, prep)
        except Exception as e:  # a missing, damaged or non-image file: say so and go on
            print(f"{path}: not a readable image ({type(e).__name__}: {e})", file=sys.stderr)
            results.append({"image": path, "error": f"not a readable image ({type(e).__name__})"})
            status = 1
            continue
        with torch.inference_mode():
            top = model(x).float().softmax(dim=1)[0].topk(k)
        ranked = [[classes[i], p] for p, i in zip(top.values.tolist(), top.indices.tolist())]
        results.append({"image": path, "top": ranked})
        if not args.json:
            print(path)
            for name, p in ranked:
                print(f"  {p:7.2%}  {name}")
    if args.json:
        print(json.dumps(results, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
