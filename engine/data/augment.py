"""fastai-style batch augmentation in plain torch: one resampling per batch, then lighting.

Geometry works in normalised coordinates (-1..1 across the image, x right, y down), as
`grid_sample` reads them. For every output pixel we compute where to read in the source with a
3x3 matrix per item, composed from right to left:

    source = centre_square · random_resized_crop · warp · flip · rotate · zoom · output

so flip, rotate, zoom, warp and the crop cost a single bilinear `grid_sample` (reflection padding,
align_corners=False). With every part switched off the matrix is exactly the identity, which is
why `augment_batch(x, s, AugSettings.off())` equals `resize_batch(x, s)` bit for bit.
"""
import math

import torch
import torch.nn.functional as F

from engine.spec import AugSettings  # the schema owns the settings; re-exported here

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LOGIT_EPS = 1e-6  # keeps logit finite on pure black / pure white pixels


# Columns of the one block of uniform draws per item; a fixed layout means changing one
# setting never changes the draws of the others.
_FLIP, _DIHEDRAL, _ROT_P, _ROT, _ZOOM_P, _ZOOM, _ZOOM_CX, _ZOOM_CY, _WARP_P, _WARP_X, _WARP_Y, \
    _CROP_AREA, _CROP_RATIO, _CROP_CX, _CROP_CY, _BRIGHT_P, _BRIGHT, _CONTRAST_P, _CONTRAST = range(19)
_N_DRAWS = 19


def _draw_params(n: int, aug: AugSettings, generator: torch.Generator | None = None) -> dict:
    """The random parameters of n items (CPU tensors): masks, angles, zooms, warps, crops, lighting."""
    u = torch.rand(n, _N_DRAWS, generator=generator, dtype=torch.float64)

    def between(lo, hi, col):
        return lo + (hi - lo) * u[:, col]

    flip = (u[:, _FLIP] < 0.5) & aug.do_flip
    # dihedral: 8 symmetries (bit 0 flips x, bit 1 flips y, bit 2 swaps axes); plain flip: x only
    dihedral = (u[:, _DIHEDRAL] * 8).long().clamp(max=7) if aug.flip_vert else torch.ones(n, dtype=torch.long)
    dihedral = torch.where(flip, dihedral, torch.zeros_like(dihedral))

    rotate_on = (u[:, _ROT_P] < aug.p_affine) & (aug.max_rotate != 0)
    angle = torch.where(rotate_on, between(-aug.max_rotate, aug.max_rotate, _ROT), 0.0)

    zoom_on = (u[:, _ZOOM_P] < aug.p_affine) & (aug.min_zoom != 1 or aug.max_zoom != 1)
    zoom = torch.where(zoom_on, between(aug.min_zoom, aug.max_zoom, _ZOOM), 1.0)
    zoom_centre = torch.stack([u[:, _ZOOM_CX], u[:, _ZOOM_CY]], dim=1)  # 0..1 across the room left

    warp_on = (u[:, _WARP_P] < aug.p_affine) & (aug.max_warp != 0)
    warp = torch.stack([between(-aug.max_warp, aug.max_warp, _WARP_X),
                        between(-aug.max_warp, aug.max_warp, _WARP_Y)], dim=1)
    warp = torch.where(warp_on[:, None], warp, 0.0)

    # random-resized crop: side fractions (w, h) with w*h = area and w/h = ratio, centre inside
    crop_on = torch.full((n,), aug.min_scale < 1)
    area = between(aug.min_scale, 1.0, _CROP_AREA)
    ratio = torch.exp(between(math.log(3 / 4), math.log(4 / 3), _CROP_RATIO))
    crop_wh = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], dim=1).clamp(max=1.0)
    crop_centre = (1 - crop_wh) * (2 * torch.stack([u[:, _CROP_CX], u[:, _CROP_CY]], dim=1) - 1)

    m = aug.max_lighting
    bright_on = (u[:, _BRIGHT_P] < aug.p_lighting) & (m != 0)
    brightness = torch.where(bright_on, between(0.5 - m / 2, 0.5 + m / 2, _BRIGHT), 0.5)
    contrast_on = (u[:, _CONTRAST_P] < aug.p_lighting) & (m != 0)
    log_c = math.log(1 - m) if m < 1 else -10.0
    contrast = torch.where(contrast_on, torch.exp(between(log_c, -log_c, _CONTRAST)), 1.0)

    return dict(dihedral=dihedral, rotate_on=rotate_on, angle=angle, zoom_on=zoom_on, zoom=zoom,
                zoom_centre=zoom_centre, warp_on=warp_on, warp=warp, crop_on=crop_on, crop_wh=crop_wh,
                crop_centre=crop_centre, bright_on=bright_on, brightness=brightness,
                contrast_on=contrast_on, contrast=contrast)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def _dihedral_mats(k: torch.Tensor) -> torch.Tensor:
    """[n] codes 0..7 -> [n,3,3]; 0 is the identity, 1 the horizontal flip."""
    m = _eye(len(k))
    sx = 1.0 - 2.0 * (k & 1).double()
    sy = 1.0 - 2.0 * ((k >> 1) & 1).double()
    swap = (k >> 2) & 1 == 1
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    swapped = torch.zeros_like(m)
    swapped[:, 0, 1], swapped[:, 1, 0], swapped[:, 2, 2] = sx, sy, 1.0
    return torch.where(swap[:, None, None], swapped, m)


def _rotate_mats(angle_deg: torch.Tensor) -> torch.Tensor:
    """Positive angles turn the picture counter-clockwise on screen."""
    t = torch.deg2rad(angle_deg)
    m = _eye(len(t))
    m[:, 0, 0], m[:, 0, 1] = t.cos(), -t.sin()
    m[:, 1, 0], m[:, 1, 1] = t.sin(), t.cos()
    return m


def _zoom_mats(zoom: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Read a window 1/zoom wide; centre in 0..1 slides it across the room left (inside for zoom>=1)."""
    s = 1 / zoom
    m = _eye(len(s))
    m[:, 0, 0] = m[:, 1, 1] = s
    m[:, :2, 2] = (1 - s)[:, None] * (2 * centre - 1)
    return m


def _warp_mats(warp: torch.Tensor) -> torch.Tensor:
    """Perspective (homography) sending the output corners to corners moved by ±warp (keystones)."""
    kx, ky = warp[:, 0:1], warp[:, 1:2]
    sx = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    sy = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    src_x = sx * (1 - sy * kx)  # top edge widens by kx when bottom narrows, and vice versa
    src_y = sy * (1 - sx * ky)  # same for left and right edges with ky
    # solve for h (8 unknowns, h33 = 1): X = (h11 x + h12 y + h13) / (h31 x + h32 y + 1), Y likewise
    n = len(warp)
    x, y = sx.expand(n, 4), sy.expand(n, 4)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_x = torch.stack([x, y, one, zero, zero, zero, -x * src_x, -y * src_x], dim=-1)
    rows_y = torch.stack([zero, zero, zero, x, y, one, -x * src_y, -y * src_y], dim=-1)
    a = torch.cat([rows_x, rows_y], dim=1)                # [n,8,8]
    b = torch.cat([src_x, src_y], dim=1).unsqueeze(-1)    # [n,8,1]
    h = torch.linalg.solve(a, b).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, dtype=torch.float64)], dim=1).view(n, 3, 3)


def _crop_mats(wh: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    m = _eye(len(wh))
    m[:, 0, 0], m[:, 1, 1] = wh[:, 0], wh[:, 1]
    m[:, :2, 2] = centre
    return m


def _centre_square(n: int, h: int, w: int) -> torch.Tensor:
    """Maps the largest centred square of an h x w image onto -1..1."""
    m = _eye(n)
    m[:, 0, 0], m[:, 1, 1] = min(h, w) / w, min(h, w) / h
    return m


def _where(on: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Items that are off get the exact identity, not a numerically near one."""
    return torch.where(on[:, None, None], mats, _eye(len(on)))


def _geometry(p: dict) -> torch.Tensor:
    """[n,3,3] output -> source (square) coordinates: crop · warp · flip · rotate · zoom."""
    m = _dihedral_mats(p["dihedral"]) @ _where(p["rotate_on"], _rotate_mats(p["angle"])) \
        @ _where(p["zoom_on"], _zoom_mats(p["zoom"], p["zoom_centre"]))
    m = _where(p["warp_on"], _warp_mats(p["warp"])) @ m
    return _where(p["crop_on"], _crop_mats(p["crop_wh"], p["crop_centre"])) @ m


def _output_coords(size: int, device) -> torch.Tensor:
    """[size,size,3] homogeneous normalised coordinates of the output pixel centres (x, y, 1)."""
    v = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1 - size) / size  # exactly symmetric
    ys, xs = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def _check_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"expected uint8 images [B,C,H,W], got {x.dtype} {tuple(x.shape)}")


def _resample(x: torch.Tensor, mats: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B,C,H,W], [B,3,3] (output -> centred square) -> float32 [B,C,size,size] in [0,1]."""
    b, _, h, w = x.shape
    mats = (_centre_square(b, h, w) @ mats).to(device=x.device, dtype=torch.float32)
    coords = torch.einsum("yxj,bij->byxi", _output_coords(size, x.device), mats)  # [B,size,size,3]
    grid = coords[..., :2] / coords[..., 2:]
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.div_(255).clamp_(0, 1)


def _lighting(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Brightness (add logit(b)) then contrast (multiply by c) in logit space; items off stay exact."""
    on = (p["bright_on"] | p["contrast_on"]).to(x.device)
    if not on.any():
        return x
    b = torch.logit(p["brightness"]).float().to(x.device).view(-1, 1, 1, 1)
    c = p["contrast"].float().to(x.device).view(-1, 1, 1, 1)
    lit = torch.sigmoid((torch.logit(x.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)) + b) * c)
    return torch.where(on.view(-1, 1, 1, 1), lit, x)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Validation path: uint8 [B,3,H,W] (square, already presized) -> float32 [B,3,size,size] in [0,1], plain resize."""
    _check_images(x)
    return _resample(x, _eye(x.shape[0]), size)


def augment_batch(x: torch.Tensor, size: int, aug: AugSettings,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Training path: uint8 [B,3,H,W] -> float32 [B,3,size,size] in [0,1], a different random augmentation per item."""
    _check_images(x)
    p = _draw_params(x.shape[0], aug, generator)
    return _lighting(_resample(x, _geometry(p), size), p)


def augment_preview(x1: torch.Tensor, n: int, size: int, aug: AugSettings,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """n different augmentations of one uint8 image [3,H,W] -> float32 [n,3,size,size]."""
    return augment_batch(x1.unsqueeze(0).expand(n, -1, -1, -1), size, aug, generator)


def _stats(x: torch.Tensor, values) -> torch.Tensor:
    shape = (-1, 1, 1) if x.dim() >= 3 else (-1,)
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(shape)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Float images [B,3,H,W] or [3,H,W] in [0,1] -> (x - mean) / std per channel."""
    return (x - _stats(x, mean)) / _stats(x, std)


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Undo `normalize`: x * std + mean per channel."""
    return x * _stats(x, std) + _stats(x, mean)
