"""Tests for engine/data/images.py on tiny images made here: colour modes, EXIF, bad files, presizing."""
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine.data.decode_pool as pool_module
from engine.data.decode_pool import presize_all, presize_to_file
from engine.data.images import decode, fit_to_box, jpeg_scale, open_image, presize, to_pil, to_rgb

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).reshape(-1, 3)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


# ---------------------------------------------------------------- one image per colour mode
# Each case: an image 3 px wide, and the RGB values to_rgb must give for its pixels.

def img_l():
    im = Image.new("L", (3, 1))
    im.putdata([0, 77, 255])
    return im, [BLACK, (77, 77, 77), WHITE]


def img_1():
    im = Image.new("1", (3, 1))
    im.putdata([0, 255, 0])
    return im, [BLACK, WHITE, BLACK]


def img_rgb():
    im = Image.new("RGB", (3, 1))
    im.putdata([(10, 20, 30), (255, 0, 0), (0, 0, 255)])
    return im, [(10, 20, 30), (255, 0, 0), (0, 0, 255)]


def img_rgba():
    im = Image.new("RGBA", (3, 1))
    im.putdata([(10, 20, 30, 255), (10, 20, 30, 0), (200, 0, 0, 255)])
    return im, [(10, 20, 30), WHITE, (200, 0, 0)]


def img_la():
    im = Image.new("LA", (3, 1))
    im.putdata([(100, 255), (7, 0), (0, 255)])
    return im, [(100, 100, 100), WHITE, BLACK]


def img_p():
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 128, 0, 1, 2, 3] + [0] * (253 * 3))
    im.putdata([0, 1, 2])
    return im, [(255, 0, 0), (0, 128, 0), (1, 2, 3)]


def img_p_transparent():
    im, _ = img_p()
    im.info["transparency"] = 1  # palette entry 1 (green) is transparent
    return im, [(255, 0, 0), WHITE, (1, 2, 3)]


def img_cmyk():
    im = Image.new("CMYK", (3, 1))
    im.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    return im, [WHITE, (0, 255, 255), BLACK]


def img_i16():
    im = Image.fromarray(np.array([[1000, 1400, 3000]], dtype=np.uint16))
    assert im.mode == "I;16"
    return im, [BLACK, (51, 51, 51), WHITE]  # (1400-1000)/(3000-1000)*255 = 51


def img_i32():
    im = Image.fromarray(np.array([[-50, 0, 200]], dtype=np.int32))
    assert im.mode == "I"
    return im, [BLACK, (51, 51, 51), WHITE]  # 50/250*255 = 51


def img_f():
    im = Image.fromarray(np.array([[-1.0, 0.6, 3.0]], dtype=np.float32))
    assert im.mode == "F"
    return im, [BLACK, (102, 102, 102), WHITE]  # 1.6/4*255 = 102


MODES = {"L": img_l, "1": img_1, "RGB": img_rgb, "RGBA": img_rgba, "LA": img_la, "P": img_p,
         "P+transparency": img_p_transparent, "CMYK": img_cmyk, "I;16": img_i16, "I": img_i32, "F": img_f}
# a lossless format that stores each mode as it is
FORMATS = {"CMYK": "tiff", "F": "tiff", "I": "tiff"}


@pytest.mark.parametrize("name", list(MODES))
def test_to_rgb(name):
    im, expected = MODES[name]()
    out = to_rgb(im)
    assert out.mode == "RGB" and out.size == (3, 1)
    assert pixels(out).tolist() == [list(p) for p in expected]


@pytest.mark.parametrize("name", list(MODES))
def test_open_image_from_file(tmp_path, name):
    im, expected = MODES[name]()
    fmt = FORMATS.get(name, "png")
    path = save(im, tmp_path / f"img.{fmt}")
    with Image.open(path) as probe:  # the file really holds that mode
        assert probe.mode == im.mode
    out = open_image(path)
    assert out.mode == "RGB"
    assert pixels(out).tolist() == [list(p) for p in expected]


def test_constant_16_bit_image_is_black():
    im = Image.fromarray(np.full((2, 2), 1234, dtype=np.uint16))
    assert pixels(to_rgb(im)).tolist() == [[0, 0, 0]] * 4


def test_exif_rotated_jpeg_comes_out_rotated(tmp_path):
    # 40 wide, 20 tall: left half red, right half blue; orientation 6 = display rotated 90° clockwise
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(im, tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    out = open_image(path)
    assert out.size == (20, 40)
    arr = np.asarray(out).astype(int)
    # turned clockwise, the left (red) half is now on top
    assert np.abs(arr[5, 10] - [255, 0, 0]).max() <= 8
    assert np.abs(arr[35, 10] - [0, 0, 255]).max() <= 8
    # the health panel reports the upright size and the file's own mode
    result = presize_all([path], 8)
    assert result.sizes[0].tolist() == [20, 40] and result.modes == ["RGB"]


def test_open_image_refuses_images_over_max_pixels(tmp_path):
    path = save(Image.new("RGB", (20, 10)), tmp_path / "big.png")
    with pytest.raises(ValueError, match="too large") as info:
        open_image(path, max_pixels=199)
    assert str(info.value) == "too large (20×10 pixels; the limit is 199)"
    assert open_image(path, max_pixels=200).size == (20, 10)


def test_open_image_reports_bad_files_as_value_errors(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(ValueError, match="not a readable image"):
        open_image(text)
    with pytest.raises(ValueError, match="not a readable image"):
        open_image(tmp_path / "missing.png")


# ---------------------------------------------------------------- presize

def stripes(width: int, height: int, values: list[int]) -> Image.Image:
    """Vertical stripes of equal width, one grey value each."""
    arr = np.repeat(np.array(values, dtype=np.uint8), width // len(values))[None, :].repeat(height, axis=0)
    return Image.fromarray(arr, "L").convert("RGB")


def test_presize_crop_keeps_the_centre():
    # 4×2: left half black, right half white; the centre 2×2 square is columns 1 and 2
    out = presize(stripes(4, 2, [0, 255]), 2, "crop")
    assert out.size == (2, 2)
    assert np.asarray(out)[..., 0].tolist() == [[0, 255], [0, 255]]
    # 6×2 in thirds: the centre square is all grey
    assert np.asarray(presize(stripes(6, 2, [0, 128, 255]), 2, "crop")).reshape(-1).tolist() == [128] * 12


def test_presize_crop_of_a_tall_image_keeps_the_middle_rows():
    tall = stripes(6, 2, [0, 128, 255]).transpose(Image.Transpose.ROTATE_90)  # 2 wide, 6 tall
    assert tall.size == (2, 6)
    assert np.asarray(presize(tall, 2, "crop")).reshape(-1).tolist() == [128] * 12


def test_presize_squish_keeps_the_whole_image():
    out = presize(stripes(6, 2, [0, 128, 255]), 2, "squish")
    arr = np.asarray(out)[..., 0].astype(int)
    assert out.size == (2, 2)
    assert (arr[:, 0] < 100).all() and (arr[:, 1] > 155).all()  # black on the left, white on the right


def test_presize_scales_then_crops():
    out = presize(stripes(8, 4, [0, 255]), 2, "crop")
    assert out.size == (2, 2)
    arr = np.asarray(out)[..., 0].astype(int)
    assert (arr[:, 0] < 128).all() and (arr[:, 1] > 128).all()


def test_presize_unknown_method():
    with pytest.raises(ValueError, match="unknown presize method"):
        presize(Image.new("RGB", (4, 4)), 2, "stretch")
    with pytest.raises(ValueError, match="unknown presize method"):
        presize_all([], 2, "stretch")


def test_presize_all_decodes_good_files_and_lists_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    good_rgb = save(Image.new("RGB", (6, 4), (10, 200, 30)), tmp_path / "a.png")
    good_l = save(Image.new("L", (3, 5), 77), tmp_path / "b.png")
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    full = save(noise, tmp_path / "full.png").read_bytes()
    truncated = tmp_path / "c.png"
    truncated.write_bytes(full[: len(full) // 2])
    text = tmp_path / "d.png"
    text.write_text("hello")
    good_rgba = save(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), tmp_path / "e.png")

    calls = []
    paths = [good_rgb, good_l, truncated, text, good_rgba]
    out = presize_all(paths, 4, "crop", progress=lambda done, n: calls.append((done, n)), workers=2)

    assert out.pixels.shape == (5, 3, 4, 4) and out.pixels.dtype == torch.uint8
    assert out.ok.tolist() == [True, True, False, False, True]
    assert sorted(out.failures) == [2, 3]
    assert out.failures[2].startswith("corrupt or truncated")
    assert out.failures[3].startswith("not a readable image")
    assert out.sizes.tolist() == [[6, 4], [3, 5], [0, 0], [0, 0], [4, 4]]
    assert out.modes == ["RGB", "L", "", "", "RGBA"]
    assert (out.size, out.method, out.nbytes) == (4, "crop", 5 * 3 * 4 * 4)
    assert out.pixels[0, :, 0, 0].tolist() == [10, 200, 30] and bool((out.pixels[0] == out.pixels[0, :, :1, :1]).all())
    assert bool((out.pixels[1] == 77).all())
    assert bool((out.pixels[2:4] == 0).all())
    assert bool((out.pixels[4] == 255).all())  # transparent on white
    assert calls[-1] == (5, 5)


@pytest.mark.parametrize("channels", [3, 1])  # grey images are presized before they become RGB: the same pixels
def test_presize_all_pixels_equal_presize_of_open_image(tmp_path, channels):
    rng = np.random.default_rng(1)
    paths = [save(Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze()), tmp_path / f"{i}.png")
             for i, (w, h) in enumerate([(12, 8), (8, 12), (10, 10), (3, 4), (40, 30)])]
    for method in ("crop", "squish"):
        out = presize_all(paths, 6, method)
        for i, p in enumerate(paths):
            expected = torch.from_numpy(np.array(presize(open_image(p), 6, method))).permute(2, 0, 1)
            assert torch.equal(out.pixels[i], expected)


def test_presize_all_progress_every_64_and_at_the_end(tmp_path):
    path = save(Image.new("RGB", (2, 2)), tmp_path / "x.png")
    calls = []
    presize_all([path] * 130, 2, progress=lambda done, n: calls.append((done, n)), workers=2)
    assert calls == [(64, 130), (128, 130), (130, 130)]


def test_to_pil_round_trip():
    x = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(3, 2, 3) * 10
    img = to_pil(x)
    assert img.mode == "RGB" and img.size == (3, 2)
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), x)
    # floats in [0, 1] are scaled to 0..255 and clamped; channels first in, pixels first out
    f = torch.tensor([[[0.0, 0.5]], [[1.0, 1.5]], [[-0.2, 0.2]]])  # [3, 1, 2]
    assert np.array(to_pil(f)).tolist() == [[[0, 255, 0], [128, 255, 51]]]


# ---------------------------------------------------------------- extreme sizes

def halves(width: int, height: int) -> Image.Image:
    """Left half black, right half white (or top and bottom for a tall image)."""
    arr = np.zeros((height, width), dtype=np.uint8)
    if width >= height:
        arr[:, width // 2:] = 255
    else:
        arr[height // 2:, :] = 255
    return Image.fromarray(arr, "L").convert("RGB")


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("width, height", [(20000, 100), (100, 20000)])
def test_extreme_aspect_ratios_are_presized(tmp_path, fmt, width, height):
    path = save(halves(width, height), tmp_path / f"strip.{fmt}")
    out = presize_all([path], 2, "crop")
    assert out.ok.tolist() == [True] and out.sizes.tolist() == [[width, height]]
    grey = out.pixels[0, 0].int()
    # the centre square holds the border between the halves: black then white along the long side
    first, second = (grey[:, 0], grey[:, 1]) if width > height else (grey[0], grey[1])
    assert (first < 64).all() and (second > 191).all()
    squished = np.asarray(presize(open_image(path), 2, "squish"))[..., 0].astype(int)
    assert squished.shape == (2, 2) and squished.min() < 64 and squished.max() > 191


def test_one_pixel_image_fills_the_square(tmp_path):
    path = save(Image.new("RGB", (1, 1), (10, 200, 30)), tmp_path / "dot.png")
    for method in ("crop", "squish"):
        out = presize_all([path], 4, method)
        assert out.ok.tolist() == [True] and out.sizes.tolist() == [[1, 1]]
        assert out.pixels[0].reshape(3, -1).T.tolist() == [[10, 200, 30]] * 16


@pytest.mark.parametrize("size, expected", [((20000, 100), (160, 1)), ((100, 20000), (1, 160)), ((1, 1), (160, 160)),
                                            ((28, 28), (160, 160)), ((320, 240), (160, 120)), ((160, 90), (160, 90))])
def test_fit_to_box_never_makes_a_side_of_zero(size, expected):
    # Streamlit shrinks a shown image to its width with int(height * width / actual_width), which is 0 for
    # a 20000×100 image at 160 px and crashed the Predict page; a copy that already fits is shown as it is
    out = fit_to_box(Image.new("RGB", size), 160)
    assert out.size == expected


def test_fit_to_box_enlarges_small_images_with_crisp_pixels():
    img = Image.new("L", (2, 1))
    img.putdata([0, 255])
    assert np.asarray(fit_to_box(img, 4)).tolist() == [[0, 0, 255, 255], [0, 0, 255, 255]]


@pytest.mark.parametrize("width, height, max_pixels, draft, scale", [
    (400, 300, 10**9, None, 1),
    (400, 300, 30_000, None, 2),  # 120,000 pixels: half size is 30,000
    (400, 300, 29_999, None, 4),
    (400, 300, 10**9, 100, 2),  # PIL's draft((100, 100)): min(400 // 100, 300 // 100) = 3 → 2
    (400, 300, 30_000, 20, 8),  # the larger of the two
    (400, 300, 1_000, None, None),  # even 1/8 is 1,875 pixels
    (20000, 1, 10_000, None, None),  # a 1-pixel side cannot shrink
])
def test_jpeg_scale(width, height, max_pixels, draft, scale):
    assert jpeg_scale(width, height, max_pixels, draft) == scale


def test_large_jpeg_is_decoded_smaller_and_others_are_refused(tmp_path):
    jpeg = save(halves(40, 40), tmp_path / "big.jpg", quality=95)
    png = save(halves(40, 40), tmp_path / "big.png")
    img, mode, size = decode(jpeg, max_pixels=500)
    assert (img.size, mode, size) == ((20, 20), "RGB", (40, 40))  # decoded at 1/2, the real size reported
    with pytest.raises(ValueError, match=r"^too large \(40×40 pixels; the limit is 500\)$"):
        decode(png, max_pixels=500)
    with pytest.raises(ValueError, match=r"^too large \(40×40 pixels; the limit is 20\)$"):
        decode(jpeg, max_pixels=20)  # 1/8 is still 25 pixels


def test_images_past_pils_bomb_limits_decode_quietly_or_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns over 1,000 pixels and refuses over 2,000
    between = save(halves(40, 40), tmp_path / "between.png")  # 1,600 pixels
    over = save(halves(50, 50), tmp_path / "over.png")  # 2,500 pixels
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters in force, records what gets through
        assert open_image(between).size == (40, 40)
        with pytest.raises(ValueError, match=r"^too large to open safely \(over 2,000 pixels\)$"):
            open_image(over)
        out = presize_all([between, over], 4)
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert out.ok.tolist() == [True, False]
    assert out.failures == {1: "too large to open safely (over 2,000 pixels)"}


# ---------------------------------------------------------------- decoding many files

def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A real-looking photo: a colour gradient, a bright disc and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack([255 * x / width, 255 * y / height, 128 + 0 * x], axis=-1)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2
    arr[disc] = (240, 220, 40)
    arr += rng.normal(0, 8, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("method", ["crop", "squish"])
def test_jpeg_draft_decode_is_close_to_a_full_decode(tmp_path, method):
    path = save(photo(400, 300), tmp_path / "photo.jpg", quality=90)
    drafted, _, size = decode(path, draft=96)
    assert drafted.size == (200, 150) and size == (400, 300)  # libjpeg decoded at 1/2: still over 96 px
    full = Image.open(path).convert("RGB")
    a = np.asarray(presize(drafted, 96, method), dtype=np.int16)
    b = np.asarray(presize(full, 96, method), dtype=np.int16)
    diff = np.abs(a - b)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8  # of 255: invisible
    assert decode(path, draft=160)[0].size == (400, 300)  # 1/2 would be under 160 px: decoded whole


def test_presize_to_file_gives_the_same_rows_in_processes_threads_or_here(tmp_path):
    paths = [save(photo(30 + i % 7, 20 + i % 5, seed=i), tmp_path / f"{i}.png") for i in range(150)]
    (tmp_path / "bad.png").write_text("no image")
    paths[70] = tmp_path / "bad.png"
    results = {}
    for name, kw in {"here": {"workers": 1}, "threads": {"workers": 2, "processes": False},
                     "processes": {"workers": 2}}.items():
        calls = []
        found = presize_to_file(tmp_path / f"{name}.u8", paths, 12, "crop", progress=lambda d, n: calls.append((d, n)), **kw)
        assert calls == [(64, 150), (128, 150), (150, 150)]
        results[name] = found, np.fromfile(tmp_path / f"{name}.u8", dtype=np.uint8).reshape(150, 3, 12, 12)
    reference = presize_all(paths, 12, workers=1)
    for found, rows in results.values():
        assert torch.equal(torch.from_numpy(rows), reference.pixels)
        assert [d.ok for d in found] == reference.ok.tolist() and found[70].failure.startswith("not a readable image")
        assert [(d.width, d.height) for d in found] == [tuple(s) for s in reference.sizes.tolist()]
    assert torch.equal(presize_all(paths, 12, workers=2).pixels, reference.pixels)


def test_a_decode_worker_that_dies_fails_only_its_own_files(tmp_path, monkeypatch):
    paths = [save(photo(8, 8, seed=i), tmp_path / f"{i}.png") for i in range(150)]
    start, decode_here = pool_module._start_worker, pool_module.decode_rows_into_file
    started, first_died = [], threading.Event()

    def first_one_dies(lock_path):
        started.append(lock_path)
        if len(started) == 1:  # starts, then exits without reading its work item, as a worker killed by a crash would
            return subprocess.Popen([sys.executable, "-c", "print('ready')"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        first_died.set()  # asked for another one: the first has died
        return start(lock_path)

    def after_the_first_died(*args):  # this process's decoding waits, so that the workers take chunks 1 and 2
        first_died.wait(timeout=60)
        return decode_here(*args)

    monkeypatch.setattr(pool_module, "_start_worker", first_one_dies)
    monkeypatch.setattr(pool_module, "decode_rows_into_file", after_the_first_died)
    found = presize_to_file(tmp_path / "rows.u8", paths, 4, workers=2)
    failed = [i for i, d in enumerate(found) if not d.ok]
    assert failed in (list(range(64)), list(range(64, 128)))  # the one chunk the dead worker had (1, or 0 if it was first)
    assert found[failed[0]].failure == "the decoder stopped on this file or one decoded with it (exit code 0)"
    assert len(started) == 2 and sum(d.ok for d in found) == 150 - 64


def test_where_no_worker_can_start_this_process_decodes_everything(tmp_path, monkeypatch):
    paths = [save(photo(8, 8, seed=i), tmp_path / f"{i}.png") for i in range(150)]
    monkeypatch.setattr(pool_module, "_start_worker", lambda lock_path: subprocess.Popen(
        [sys.executable, "-c", "raise SystemExit(1)"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    found = presize_to_file(tmp_path / "rows.u8", paths, 4, workers=3)
    assert len(found) == 150 and all(d.ok for d in found)
