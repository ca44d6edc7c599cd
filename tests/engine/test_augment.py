"""Tests for engine/data/augment.py on tiny real images (sklearn digits) and coordinate ramps.

The ramp image stores each pixel's own column in channel 0 and row in channel 1 (256 px wide, so
values 0..255 fit uint8 exactly). Bilinear sampling of a linear function is exact, so after any
augmentation `255 * out[:, 0]` and `255 * out[:, 1]` are the source pixel coordinates each output
pixel was read from: rotation angles, zoom factors and crop sizes can be measured from the image.
"""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from engine.data.augment import (IMAGENET_MEAN, IMAGENET_STD, AugSettings, _draw_params, _geometry,
                            augment_batch, augment_preview, denormalize, normalize, resize_batch)

OFF = AugSettings.off()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """32 handwritten digits as uint8 [32,3,64,64] (8x8 upscaled, grey levels 0..16 -> 0..240)."""
    d = torch.tensor(load_digits().images[:32], dtype=torch.float32) * 15
    d = F.interpolate(d[:, None], size=64, mode="nearest").to(torch.uint8)
    return d.expand(-1, 3, -1, -1).contiguous()


def ramps(n: int = 1) -> torch.Tensor:
    """uint8 [n,3,256,256]: channel 0 = column index, channel 1 = row index, channel 2 = 128."""
    i = torch.arange(256, dtype=torch.uint8)
    img = torch.stack([i.expand(256, 256), i[:, None].expand(256, 256), torch.full((256, 256), 128, dtype=torch.uint8)])
    return img.expand(n, -1, -1, -1).contiguous()


def source_coords(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source column and row (pixels) each output pixel was read from, for ramp inputs."""
    return out[:, 0].double() * 255, out[:, 1].double() * 255


def test_shapes_dtypes_range(digits):
    out = augment_batch(digits, 48, AugSettings(min_scale=0.75), gen(0))
    assert out.shape == (32, 3, 48, 48) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert resize_batch(digits, 48).dtype == torch.float32
    with pytest.raises(ValueError):
        resize_batch(digits.float(), 48)


def test_off_equals_resize_exactly(digits):
    for size in (64, 40, 100):
        assert torch.equal(augment_batch(digits, size, OFF, gen(1)), resize_batch(digits, size))
    wide = torch.randint(0, 256, (4, 3, 30, 50), dtype=torch.uint8, generator=gen(2))
    assert torch.equal(augment_batch(wide, 30, OFF, gen(1)), resize_batch(wide, 30))


def test_resize_to_own_size_is_identity(digits):
    torch.testing.assert_close(resize_batch(digits, 64), digits / 255, atol=1e-6, rtol=0)


def test_resize_halving_averages_2x2_blocks(digits):
    # align_corners=False: output pixel i reads at source 2i + 0.5, halfway between pixels 2i and 2i+1
    torch.testing.assert_close(resize_batch(digits, 32), F.avg_pool2d(digits.float(), 2) / 255, atol=1e-6, rtol=0)


def test_resize_non_square_centre_crops():
    x = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8, generator=gen(3))
    # the 2/3 scale is not exact in float32: allow 1/100 of a grey level
    torch.testing.assert_close(resize_batch(x, 40), x[..., 10:50] / 255, atol=4e-5, rtol=0)
    torch.testing.assert_close(resize_batch(x.transpose(2, 3), 40), x.transpose(2, 3)[..., 10:50, :] / 255,
                               atol=4e-5, rtol=0)


def test_flip_only_gives_original_or_mirror(digits):
    aug = AugSettings(do_flip=True, max_rotate=0, max_zoom=1, max_lighting=0, max_warp=0)
    out = augment_batch(digits, 64, aug, gen(4))
    flipped = []
    for o, x in zip(out, digits):
        same, mirror = torch.allclose(o, x / 255, atol=1e-6), torch.allclose(o, x.flip(-1) / 255, atol=1e-6)
        assert same or mirror
        flipped.append(mirror and not same)
    assert 0 < sum(flipped) < len(flipped)


def test_flip_vert_gives_the_8_dihedral_symmetries(digits):
    aug = AugSettings(do_flip=True, flip_vert=True, max_rotate=0, max_zoom=1, max_lighting=0, max_warp=0)
    x = digits[:1].expand(64, -1, -1, -1)
    out = augment_batch(x, 64, aug, gen(5))
    img = digits[0] / 255
    symmetries = [s for t in (img, img.transpose(1, 2)) for s in (t, t.flip(2), t.flip(1), t.flip(1, 2))]
    seen = set()
    for o in out:
        matches = [k for k, s in enumerate(symmetries) if torch.allclose(o, s, atol=1e-6)]
        assert matches
        seen.add(matches[0])
    assert len(seen) >= 6  # 64 draws: identity half the time, the others 1/16 each


def test_rotate_angle_measured_from_image_matches_draw_and_range():
    aug = AugSettings(do_flip=False, max_rotate=10, max_zoom=1, max_lighting=0, max_warp=0, p_affine=0.5)
    out = augment_batch(ramps(32), 64, aug, gen(6))
    col, row = source_coords(out)
    c = slice(16, 48)  # central region, far from the padding
    # Jacobian d(source)/d(output) = (256/64) * [[cos, -sin], [sin, cos]], positive = counter-clockwise
    dcol_dx = (col[:, c, 17:49] - col[:, c, 16:48]).mean(dim=(1, 2)) / 4
    drow_dx = (row[:, c, 17:49] - row[:, c, 16:48]).mean(dim=(1, 2)) / 4
    measured = torch.rad2deg(torch.atan2(drow_dx, dcol_dx))
    drawn = _draw_params(32, aug, gen(6))["angle"]
    torch.testing.assert_close(measured, drawn, atol=0.02, rtol=0)
    assert measured.abs().max() <= 10.02
    rotated = drawn != 0
    assert 0 < rotated.sum() < 32 and drawn[rotated].abs().min() > 0  # p_affine=0.5: some of each


def test_rotate_positive_is_counter_clockwise():
    # a 90° counter-clockwise turn brings what was at the bottom to the right edge
    p = _draw_params(1, OFF, gen(0))
    p["rotate_on"], p["angle"] = torch.tensor([True]), torch.tensor([90.0], dtype=torch.float64)
    source_of_right_middle = _geometry(p)[0] @ torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(source_of_right_middle, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


def test_zoom_only_stays_inside_and_matches_draw():
    aug = AugSettings(do_flip=False, max_rotate=0, min_zoom=1, max_zoom=2, max_lighting=0, max_warp=0, p_affine=1)
    out = augment_batch(ramps(32), 64, aug, gen(7))
    col, row = source_coords(out)
    # reflected padding would make rows fold back (V shape); inside the image they are straight lines
    dcol = col[:, :, 1:] - col[:, :, :-1]
    drow = row[:, 1:, :] - row[:, :-1, :]
    assert dcol.min() > 0 and drow.min() > 0
    torch.testing.assert_close(dcol, dcol[:, :1, :1].expand_as(dcol), atol=1e-3, rtol=0)
    assert col.min() >= 0 and col.max() <= 255 and row.min() >= 0 and row.max() <= 255
    zoom = 4 / dcol[:, 0, 0]
    torch.testing.assert_close(zoom, _draw_params(32, aug, gen(7))["zoom"], atol=1e-4, rtol=0)
    assert zoom.min() >= 1 - 1e-4 and zoom.max() <= 2 + 1e-4 and zoom.max() - zoom.min() > 0.5
    # random centre: the window's left edge lands at many different places
    assert col[:, 0, 0].std() > 5


def test_random_resized_crop_area_and_ratio():
    aug = AugSettings(do_flip=False, max_rotate=0, max_zoom=1, max_lighting=0, max_warp=0, min_scale=0.5)
    out = augment_batch(ramps(32), 64, aug, gen(8))
    col, row = source_coords(out)
    w = (col[:, 0, -1] - col[:, 0, 0]) / 63 * 64 / 256  # crop width as a fraction of the image
    h = (row[:, -1, 0] - row[:, 0, 0]) / 63 * 64 / 256
    area, ratio = w * h, w / h
    assert area.min() >= 0.5 * 0.999 and area.max() <= 1.0001 and area.max() - area.min() > 0.2
    assert ratio.min() >= 3 / 4 * 0.999 and ratio.max() <= 4 / 3 * 1.001
    assert col.min() >= 0 and col.max() <= 255 and (col[:, :, 1:] > col[:, :, :-1]).all()


def test_warp_moves_corners_by_at_most_max_warp_and_keeps_lines_straight():
    aug = AugSettings(do_flip=False, max_rotate=0, max_zoom=1, max_lighting=0, max_warp=0.2, p_affine=1)
    mats = _geometry(_draw_params(32, aug, gen(9)))
    corners = torch.tensor([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], dtype=torch.float64)
    moved = corners @ mats.transpose(1, 2)
    moved = moved[..., :2] / moved[..., 2:]
    shift = (moved - corners[:, :2]).abs()
    assert shift.max() <= 0.2 + 1e-9 and shift.max() > 0.15

    out = augment_batch(ramps(32), 64, aug, gen(9))
    col, row = source_coords(out)
    # a perspective map keeps straight lines straight: points read along an output row are collinear
    c = slice(12, 52)
    p0 = torch.stack([col[:, 32, 12], row[:, 32, 12]], -1)[:, None]
    p1 = torch.stack([col[:, 32, 51], row[:, 32, 51]], -1)[:, None]
    pts = torch.stack([col[:, 32, c], row[:, 32, c]], -1)
    d, e = p1 - p0, pts - p0
    off_line = (d[..., 0] * e[..., 1] - d[..., 1] * e[..., 0]).abs() / d.norm(dim=-1)
    assert off_line.max() < 0.05
    assert not torch.allclose(out, resize_batch(ramps(32), 64), atol=1e-3)


def test_lighting_only_is_monotonic_with_brightness_contrast_in_range():
    aug = AugSettings(do_flip=False, max_rotate=0, max_zoom=1, max_lighting=0.2, max_warp=0)
    # every row holds the grey levels 1..254 in order; resized to its own size, so only lighting acts
    x = torch.arange(1, 255, dtype=torch.uint8)[None, None, None].expand(32, 3, 254, -1).contiguous()
    out = augment_batch(x, 254, aug, gen(10))
    row = out[:, 0, 0]  # [32,254]
    torch.testing.assert_close(out, row[:, None, None].expand_as(out), atol=1e-6, rtol=0)  # same on every row
    # output never decreases where input increases
    assert (row[:, 1:] - row[:, :-1]).min() >= 0
    # independent fit: logit(out) = c * logit(x) + c * logit(b)
    lx = torch.logit(torch.arange(1, 255, dtype=torch.float64) / 255)
    ly = torch.logit(row.double())
    c = ((lx - lx.mean()) * (ly - ly.mean(1, keepdim=True))).sum(1) / ((lx - lx.mean()) ** 2).sum()
    b = torch.sigmoid((ly.mean(1) - c * lx.mean()) / c)
    assert c.min() >= 0.8 - 1e-3 and c.max() <= 1.25 + 1e-3
    assert b.min() >= 0.4 - 1e-4 and b.max() <= 0.6 + 1e-4
    p = _draw_params(32, aug, gen(10))
    torch.testing.assert_close(c, p["contrast"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b, p["brightness"], atol=1e-4, rtol=0)
    unlit = ~(p["bright_on"] | p["contrast_on"])
    assert unlit.any() and torch.equal(out[unlit], resize_batch(x[unlit], 254))


def test_same_seed_same_output_different_seed_different(digits):
    aug = AugSettings(min_scale=0.75)
    a, b = augment_batch(digits, 48, aug, gen(11)), augment_batch(digits, 48, aug, gen(11))
    assert torch.equal(a, b)
    assert not torch.allclose(a, augment_batch(digits, 48, aug, gen(12)))


def test_p_affine_zero_means_no_geometric_change(digits):
    aug = AugSettings(do_flip=False, max_rotate=45, min_zoom=0.5, max_zoom=2, max_warp=0.4, max_lighting=0,
                      p_affine=0.0)
    assert torch.equal(augment_batch(digits, 48, aug, gen(13)), resize_batch(digits, 48))


def test_default_batch_of_64_at_224():
    x = torch.randint(0, 256, (64, 3, 256, 256), dtype=torch.uint8, generator=gen(14))
    out = augment_batch(x, 224, AugSettings(min_scale=0.75), gen(14))
    assert out.shape == (64, 3, 224, 224) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_augment_preview_varies_one_image(digits):
    out = augment_preview(digits[3], 6, 32, AugSettings(), gen(15))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    assert len({tuple(o.flatten()[:200].tolist()) for o in out}) > 1
    torch.testing.assert_close(augment_preview(digits[3], 2, 32, OFF), resize_batch(digits[3:4], 32).expand(2, -1, -1, -1))


def test_normalize_denormalize():
    x = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert normalize(x).abs().max() < 1e-7
    one = normalize(torch.ones(3, 2, 2))
    torch.testing.assert_close(one[:, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]))
    y = torch.rand(2, 3, 5, 5, generator=gen(16))
    torch.testing.assert_close(denormalize(normalize(y)), y)
