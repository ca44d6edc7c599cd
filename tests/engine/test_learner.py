"""The Learner on a small set of the real digits: schedules per batch, fine_tune phases, control, LR finder."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from engine.augment import AugSettings
from engine.data import DataLoaders, PresizeCache, label_items
from engine.labels import LabelRule
from engine.learner import Callback, EarlyStopping, FunctionCallback, Learner, SaveBest, accuracy, error_rate
from engine.models import create_head, param_groups, small_body
from engine.schedule import one_cycle_lr, one_cycle_mom, sched_exp
from engine.sources import scan_folder
from engine.split import SplitRule

PER_CLASS = 24  # 240 images: 192 train (6 batches of 32), 48 valid


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory, write_digits):
    return write_digits(tmp_path_factory.mktemp("digits"), per_class=PER_CLASS)


@pytest.fixture(scope="module")
def pixels(digits_dir):
    scan = scan_folder(digits_dir)
    items = label_items(scan, LabelRule(pattern=r"^(.+)_\d+\.png$"), SplitRule(valid_pct=0.2, seed=42))
    return items, PresizeCache().get(items.scanned_paths, 32)


def tiny_model(n_classes: int) -> torch.nn.Module:
    """The small architecture at a fraction of its width, so these tests stay quick."""
    body = small_body((8, 16))
    body.split_at = 1
    return torch.nn.Sequential(body, create_head(16, n_classes))


def make_learner(pixels, pretrained=False, callbacks=(), seed=0) -> Learner:
    items, images = pixels
    torch.manual_seed(seed)
    dls = DataLoaders(items, images, size=28, bs=32, aug=AugSettings(do_flip=False), seed=seed)
    return Learner(tiny_model(len(dls.classes)), dls, pretrained=pretrained, callbacks=callbacks)


def test_metrics():
    preds = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = torch.tensor([1, 0, 0, 0])
    assert accuracy(preds, targets) == 0.75
    assert error_rate(preds, targets) == 0.25


def test_optimizer_is_adam_with_decoupled_weight_decay(pixels):
    learn = make_learner(pixels)
    assert isinstance(learn.opt, torch.optim.AdamW)
    assert len(learn.opt.param_groups) == 3
    for group in learn.opt.param_groups:
        assert group["betas"] == (0.9, 0.99) and group["eps"] == 1e-5 and group["weight_decay"] == 0.01


def test_fit_one_cycle_sets_lr_and_momentum_every_batch(pixels):
    learn = make_learner(pixels)
    logs = learn.fit_one_cycle(2, 1e-2)
    batches = learn.recorder.batches
    n = 2 * (192 // 32)
    assert logs["status"] == "done" and len(batches) == n
    lr, mom = one_cycle_lr(1e-2), one_cycle_mom()
    for i, b in enumerate(batches):
        assert b["lr"] == pytest.approx(lr(i / n), rel=1e-12)
        assert b["mom"] == pytest.approx(mom(i / n), rel=1e-12)
    assert learn.opt.param_groups[0]["betas"][0] == pytest.approx(mom((n - 1) / n))
    rows = learn.recorder.epochs
    assert [r["epoch"] for r in rows] == [0, 1]
    assert set(rows[0]) == {"epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "phase"}
    assert rows[1]["train_loss"] == pytest.approx(batches[-1]["smooth_loss"])
    assert rows[1]["accuracy"] == pytest.approx(1 - rows[1]["error_rate"])
    assert learn.recorder.images_per_s > 0


def test_smoothed_loss_is_debiased_ema(pixels):
    learn = make_learner(pixels)
    learn.fit_one_cycle(1, 1e-3)
    raw = [b["loss"] for b in learn.recorder.batches]
    avg, expected = 0.0, []
    for i, loss in enumerate(raw, start=1):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98**i))
    assert [b["smooth_loss"] for b in learn.recorder.batches] == pytest.approx(expected, rel=1e-12)


def test_discriminative_lrs_per_group(pixels):
    learn = make_learner(pixels)
    seen = []
    learn.callbacks.append(FunctionCallback(lambda e, logs: seen.append(list(logs["lrs"])) if e == "before_batch" else None))
    learn.fit_one_cycle(1, slice(1e-5, 1e-3), pct_start=0.25)
    peak = seen[round(0.25 * len(seen))]  # the top of the warm-up
    ratios = [peak[1] / peak[0], peak[2] / peak[1]]
    assert ratios == pytest.approx([10, 10], rel=0.05)


def test_fine_tune_pretrained_freezes_the_body_first(pixels):
    learn = make_learner(pixels, pretrained=True)
    body_conv = learn.model[0][0][0].weight
    body_bn = learn.model[0][0][1].weight
    conv_before, bn_before = body_conv.detach().clone(), body_bn.detach().clone()
    phases = []

    class Watch(Callback):
        def after_fit(self, learn_, logs):
            phases.append((logs["phase"], torch.equal(body_conv, conv_before), torch.equal(body_bn, bn_before)))

    learn.callbacks.append(Watch())
    learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1)
    # frozen phase: convolutions unchanged, BatchNorm trained; then everything trains
    assert phases == [("frozen", True, False), ("unfrozen", False, False)]
    assert [r["phase"] for r in learn.recorder.epochs] == ["frozen", "unfrozen"]
    assert all(p.requires_grad for p in learn.model.parameters())


def test_fine_tune_from_scratch_never_freezes(pixels):
    learn = make_learner(pixels, pretrained=False)
    conv_before = learn.model[0][0][0].weight.detach().clone()
    first_batch = []
    learn.callbacks.append(FunctionCallback(
        lambda e, logs: first_batch.append(all(p.requires_grad for p in learn.model.parameters()))
        if e == "after_batch" and not first_batch else None))
    learn.fine_tune(1, freeze_epochs=1)
    assert first_batch == [True]
    assert not torch.equal(learn.model[0][0][0].weight, conv_before)
    assert [r["phase"] for r in learn.recorder.epochs] == ["from_scratch", "from_scratch"]


def test_stop_event_ends_cleanly_with_metrics_so_far(pixels):
    learn = make_learner(pixels)

    def stop_in_second_epoch(event, logs):
        if event == "after_batch" and logs["iter"] == 8:
            learn.stop_event.set()

    learn.callbacks.append(FunctionCallback(stop_in_second_epoch))
    logs = learn.fit_one_cycle(3, 1e-3)
    assert logs["status"] == "stopped"
    assert len(learn.recorder.batches) == 9  # the stop acts before the next batch
    assert len(learn.recorder.epochs) == 1 and math.isfinite(learn.recorder.epochs[0]["valid_loss"])


def test_pause_blocks_until_resumed(pixels):
    learn = make_learner(pixels)
    paused_at = []

    def pause_once(event, logs):
        if event == "after_batch" and logs["iter"] == 2 and not paused_at:
            learn.pause_event.set()
            paused_at.append(logs["iter"])
            threading.Timer(0.5, learn.pause_event.clear).start()

    learn.callbacks.append(FunctionCallback(pause_once))
    logs = learn.fit_one_cycle(1, 1e-3)
    assert logs["status"] == "done" and len(learn.recorder.batches) == 6
    assert not learn.pause_event.is_set()


def test_stop_while_paused(pixels):
    learn = make_learner(pixels)

    def pause(event, logs):
        if event == "after_batch" and logs["iter"] == 1:
            learn.pause_event.set()
            threading.Timer(0.3, learn.stop_event.set).start()

    learn.callbacks.append(FunctionCallback(pause))
    assert learn.fit_one_cycle(2, 1e-3)["status"] == "stopped"
    assert len(learn.recorder.batches) == 2


def test_an_error_in_the_loop_is_raised_and_reported(pixels):
    seen = {}

    class Boom(Callback):
        def after_batch(self, learn_, logs):
            if logs["iter"] == 3:
                raise RuntimeError("disk full")

        def after_fit(self, learn_, logs):
            seen.update(logs)

    learn = make_learner(pixels, callbacks=[Boom()])
    with pytest.raises(RuntimeError, match="disk full"):
        learn.fit_one_cycle(1, 1e-3)
    assert seen["status"] == "failed" and "disk full" in seen["error"]


class FakeLearner:
    def __init__(self):
        self.stop_training = False
        self.model = torch.nn.Linear(2, 1)


def test_early_stopping_patience():
    cb, learn = EarlyStopping(patience=2), FakeLearner()
    cb.before_fit(learn, {})
    for loss in (1.0, 0.8, 0.9):
        cb.after_epoch(learn, {"valid_loss": loss})
        assert not learn.stop_training
    cb.after_epoch(learn, {"valid_loss": 0.85})
    assert learn.stop_training


def test_save_best_restores_the_best_epoch():
    cb, learn = SaveBest(), FakeLearner()
    weights = []
    for epoch, loss in enumerate((0.9, 0.5, 0.7)):
        with torch.no_grad():
            learn.model.weight.fill_(epoch)
        weights.append(epoch)
        cb.after_epoch(learn, {"valid_loss": loss, "epoch": epoch})
    logs = {"status": "done"}
    cb.after_fit(learn, logs)
    assert torch.all(learn.model.weight == 1) and logs["best_epoch"] == 1


def test_early_stopping_in_a_real_fit(pixels):
    learn = make_learner(pixels, callbacks=[EarlyStopping(patience=1, min_delta=10.0)])  # nothing improves by 10
    learn.fit_one_cycle(4, 1e-3)
    assert len(learn.recorder.epochs) == 2


def test_lr_find_restores_weights_bit_for_bit(pixels):
    learn = make_learner(pixels)
    learn.fit_one_cycle(1, 1e-3)  # so the optimizer has state to restore too
    params = [p.detach().clone() for p in learn.model.parameters()]
    buffers = [b.detach().clone() for b in learn.model.buffers()]
    opt_state = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in learn.opt.state.items()}
    result = learn.lr_find(num_it=12)
    assert all(torch.equal(a, b) for a, b in zip(params, learn.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, learn.model.buffers()))
    for k, v in learn.opt.state.items():
        assert all(torch.equal(opt_state[k][n], t) for n, t in v.items() if torch.is_tensor(t))
    n = len(result.lrs)
    assert result.lrs == pytest.approx([sched_exp(1e-7, 10, i / 12) for i in range(n)], rel=1e-12)


def test_lr_find_stops_when_the_loss_explodes(pixels):
    learn = make_learner(pixels)
    result = learn.lr_find(start_lr=1e-2, end_lr=1e6, num_it=60)
    assert result.stopped_early and len(result.lrs) < 60
    assert result.losses[-1] > 4 * min(result.losses) or not np.isfinite(result.losses[-1])


def test_lr_find_suggestions(pixels):
    learn = make_learner(pixels)
    result = learn.lr_find(num_it=45)  # 45 - 4 - 5 = 36 points after trimming: enough for all four
    assert set(result.suggestions) >= {"valley", "minimum", "steep"}
    for s in result.suggestions.values():
        assert 1e-7 <= s.lr <= 10


def test_param_groups_of_the_learner_cover_the_model(pixels):
    learn = make_learner(pixels)
    ids = [id(p) for g in param_groups(learn.model) for p in g]
    assert sorted(ids) == sorted(id(p) for p in learn.model.parameters())
