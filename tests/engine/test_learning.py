"""How learning works (the book's chapter 4): a picture as numbers, the closest-average baseline, gradient descent by
hand on the seeded toy (float64 throughout, so its numbers are exact on any CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.data.builtin import digit_images
from engine.data.decode_pool import presize_all
from engine.data.labels import LabelRule
from engine.data.loaders import label_items
from engine.data.sources import scan_folder
from engine.data.split import SplitRule
from engine.errors import UserError
from engine.results.learning import (PHASES, START_SEED, advance, baseline, closest_average, fit_losses, gradient,
                                     initialise, loss, picture_numbers, predict, run_steps, same_validation, shrink,
                                     speed_data, step)
from engine.spec import DataSpec

# ---------------------------------------------------------------- a picture is numbers


def test_shrink_averages_the_pixels_each_cell_covers():
    px = torch.tensor([[0, 0, 255, 255], [0, 0, 255, 255], [10, 30, 0, 0], [50, 70, 0, 0]], dtype=torch.uint8)
    small = shrink(px.expand(1, 3, 4, 4), 2)
    assert small.shape == (1, 3, 2, 2)
    assert torch.allclose(small[0, 0] * 255, torch.tensor([[0.0, 255.0], [40.0, 0.0]]))


def test_picture_numbers_are_brightness_from_0_to_255():
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    img[:, :4, :4] = 255  # white top-left quarter
    img[0, 4:, 4:] = 255  # pure red bottom-right quarter
    grid = picture_numbers(img, 2)
    assert grid.dtype == np.int64 and grid.tolist() == [[255, 0], [0, 76]]  # red weighs 0.299 (as PIL's "L")
    assert picture_numbers(img, 8).shape == (8, 8)
    assert picture_numbers(img, 16).shape == (16, 16)  # larger than the picture: each pixel repeated


# ---------------------------------------------------------------- the simplest baseline

def test_closest_average_by_hand():
    # class 0 pictures are dark (0.1, 0.3 → average 0.2), class 1 bright (0.8); one picture sits between them
    train = torch.tensor([0.1, 0.3, 0.8]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    valid = torch.tensor([0.0, 0.9, 0.45, 0.55]).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    result = closest_average(train, torch.tensor([0, 0, 1]), valid, torch.tensor([0, 1, 1, 1]), ["dark", "bright"])
    assert result.averages.shape == (2, 3, 2, 2)
    assert result.averages[:, 0, 0, 0] == pytest.approx([0.2, 0.8])
    # 0.45 is closer to 0.2 (wrong), 0.55 closer to 0.8 (right): 3 of 4
    assert (result.accuracy_l1, result.accuracy_l2) == (0.75, 0.75)
    assert result.majority == 0.25 and result.n_train == [2, 1] and result.n_valid == 4 and result.missing == []


def test_l1_and_l2_can_disagree():
    # average A is off by 0.3 everywhere, average B is exact but for one cell off by 1: L1 prefers B, L2 prefers A
    x = torch.zeros(1, 1, 2, 2)
    a, b = torch.full((1, 2, 2), 0.3), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    result = closest_average(torch.stack([a, b]), torch.tensor([0, 1]), x, torch.tensor([1]), ["a", "b"])
    assert (result.accuracy_l1, result.accuracy_l2) == (1.0, 0.0)


def test_a_class_without_training_pictures_has_no_average_and_counts_wrong():
    train = torch.tensor([0.1, 0.9]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    valid = torch.tensor([0.1, 0.9, 0.5]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    result = closest_average(train, torch.tensor([0, 1]), valid, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    assert result.missing == ["c"] and result.accuracy_l1 == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="no readable validation pictures"):
        closest_average(train, torch.tensor([0, 1]), valid[:0], torch.tensor([], dtype=torch.long), ["a", "b"])


def test_closest_average_on_the_digits_is_far_above_chance():
    images, targets = digit_images()
    x = shrink(torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1))
    y = torch.from_numpy(targets)
    valid = torch.arange(len(y)) % 5 == 0
    result = closest_average(x[~valid], y[~valid], x[valid], y[valid], [str(d) for d in range(10)])
    assert result.averages.shape == (10, 3, 28, 28)
    assert result.accuracy_l1 > 0.7 and result.accuracy_l2 > 0.7  # chance is 0.1
    assert result.majority < 0.15
    # the average "1" is brightest in the middle column, the average "0" is dark in its centre
    one, zero = result.averages[1, 0], result.averages[0, 0]
    assert one[:, 12:16].mean() > one[:, :6].mean() and zero[12:16, 12:16].mean() < zero[4:8, 8:20].mean()


@pytest.fixture()
def shades(tmp_path) -> Path:
    """Dark and bright pictures in train/ and valid/ class folders, one of them unreadable."""
    for split, n in (("train", 4), ("valid", 2)):
        for label, level in (("dark", 40), ("bright", 220)):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (level + i, level, level)).save(tmp_path / split / label / f"{i}.png")
    (tmp_path / "valid" / "dark" / "broken.png").write_bytes(b"not a picture")
    return tmp_path


def test_baseline_of_a_folder_uses_its_split_and_leaves_unreadable_pictures_out(shades):
    items = label_items(scan_folder(shades), LabelRule(kind="folder"), SplitRule(kind="folder"))
    result = baseline(items, presize_all(items.scanned_paths, 16), size=4)
    assert result.classes == ["bright", "dark"] and result.n_train == [4, 4] and result.n_valid == 4
    assert result.accuracy_l1 == result.accuracy_l2 == 1.0
    assert result.averages.shape == (2, 3, 4, 4) and result.averages[1, 1, 0, 0] == pytest.approx(40 / 255)
    sampled = baseline(items, presize_all(items.scanned_paths, 64), size=4)  # large pictures: every 4th pixel
    assert sampled.accuracy_l1 == 1.0 and np.allclose(sampled.averages, result.averages, atol=1e-6)


def test_the_baseline_command_prints_one_json_line(shades, capsys):
    assert main(["baseline", "--data", str(shades), "--label", "folder", "--split", "folder", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["accuracy_l1"] == out["accuracy_l2"] == 1.0 and out["n_valid"] == 4 and out["classes"] == ["bright", "dark"]


def test_same_validation_compares_pictures_labels_and_split():
    a = DataSpec(source="/x", label=LabelRule(kind="folder"), split=SplitRule(kind="random", seed=1), size=28)
    assert same_validation(a, DataSpec(source="/x", label=LabelRule(kind="folder"), split=SplitRule(kind="random", seed=1),
                                       size=64))
    assert not same_validation(a, DataSpec(source="/x", label=LabelRule(kind="folder"),
                                           split=SplitRule(kind="random", seed=2)))


# ---------------------------------------------------------------- gradient descent by hand

def test_the_toy_data_is_the_books_noisy_quadratic_and_seeded():
    data = speed_data()
    assert data.time.tolist() == list(range(20)) and data.speed.dtype == np.float64
    assert np.array_equal(data.speed, speed_data().speed) and not np.array_equal(data.speed, speed_data(seed=1).speed)
    noise = data.speed - (0.75 * (data.time - 9.5) ** 2 + 1)
    assert 1 < noise.std() < 5


def test_each_phase_does_what_the_book_says():
    data = speed_data()
    state = initialise()
    assert state.done == "initialise" and state.next_phase == "predict" and state == initialise(START_SEED)
    a, b, c = state.params
    state = predict(state, data)
    assert np.allclose(state.preds, a * data.time ** 2 + b * data.time + c, rtol=1e-15)
    state = loss(state, data)
    expected = np.mean((np.asarray(state.preds) - data.speed) ** 2)
    assert state.loss == pytest.approx(expected, rel=1e-12) and state.losses == (state.loss,)
    state = gradient(state, data)
    err = 2 * (np.asarray(state.preds) - data.speed) / len(data.time)  # d mse / d prediction, by hand
    by_hand = [np.sum(err * data.time ** 2), np.sum(err * data.time), np.sum(err)]
    assert state.grad == pytest.approx(by_hand, rel=1e-10)
    stepped = step(state, data, lr=1e-5)
    assert stepped.params == pytest.approx([p - 1e-5 * g for p, g in zip(state.params, state.grad)], rel=1e-15)
    assert (stepped.done, stepped.steps, stepped.before, stepped.lr, stepped.next_phase) == \
        ("step", 1, state.params, 1e-5, "predict")


def test_advance_cycles_through_the_phases():
    data, state, seen = speed_data(), initialise(), []
    for _ in range(9):
        state = advance(state, data, 1e-5)
        seen.append(state.done)
    assert seen == [*PHASES[1:], *PHASES[1:], "predict"] and state.steps == 2 and len(state.losses) == 2


def test_the_toys_numbers_are_exact():
    # the seeded start (a curve bending down, far from the points) and the book's rate, 1e-5; numpy's seeded
    # generator and float64 arithmetic give these on any CPU
    losses = fit_losses(speed_data(), 1e-5, n=3)
    assert initialise().params == pytest.approx((-0.8019314252534474, -1.324358995628145, -0.24836162209524854),
                                                rel=1e-12)
    assert losses == pytest.approx([30282.712188374084, 6248.203284960074, 1700.1341344851603], rel=1e-9)


def test_a_good_rate_lowers_the_loss_every_step():
    losses = fit_losses(speed_data(), 1e-5, n=10)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.05 * losses[0]


def test_a_rate_too_large_diverges():
    losses = fit_losses(speed_data(), 1e-4, n=10)
    assert all(later > earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] > 1e6 * losses[0]


def test_a_rate_just_under_the_limit_bounces_around_the_answer():
    data = speed_data()
    state, signs = initialise(), []
    for _ in range(6):
        state = run_steps(state, data, 3e-5, n=1)
        signs.append(np.sign(state.params[0] - 0.22))  # a's best value is about 0.22
    assert signs == [1, -1, 1, -1, 1, -1]  # overshoots to one side, then the other
    assert fit_losses(data, 3e-5, n=10)[-1] < 0.05 * fit_losses(data, 3e-5, n=1)[0]  # but it gets there


def test_a_rate_too_small_barely_moves():
    losses = fit_losses(speed_data(), 1e-8, n=10)
    assert losses[-1] < losses[0] and (losses[0] - losses[-1]) / losses[0] < 0.02


def test_running_far_past_divergence_stops_when_the_numbers_overflow():
    data = speed_data()
    state = run_steps(initialise(), data, 1e-2, n=500)
    assert state.stuck and state.steps < 500
    assert run_steps(state, data, 1e-2, n=10) == state  # nothing more happens; initialise starts again
