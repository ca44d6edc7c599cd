"""The Learner on a small set of the real digits: schedules per batch, fine_tune phases, control, LR finder."""
from __future__ import annotations

import math
import threading

import fastai_reference as fastai
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.train import precision
from engine.data.augment import AugSettings
from engine.data.loaders import DataLoaders, PresizeCache, label_items
from engine.errors import UserError
from engine.store.jobs import RunControl
from engine.data.labels import LabelRule
from engine.train.learner import (Callback, EarlyStopping, FunctionCallback, Learner, LRFinder, SaveBest, accuracy,
                            error_rate)
from engine.train.lr_suggest import trim
from engine.train.models import create_head, param_groups, small_body
from engine.train.schedule import one_cycle_lr, one_cycle_mom, sched_exp
from engine.data.sources import scan_folder
from engine.data.split import SplitRule

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


def make_learner(pixels, pretrained=False, callbacks=(), seed=0, control=None) -> Learner:
    items, images = pixels
    torch.manual_seed(seed)
    dls = DataLoaders(items, images, size=28, bs=32, aug=AugSettings(do_flip=False), seed=seed)
    return Learner(tiny_model(len(dls.classes)), dls, pretrained=pretrained, callbacks=callbacks, control=control)


def test_metrics():
    preds = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = torch.tensor([1, 0, 0, 0])
    assert accuracy(preds, targets) == 0.75
    assert error_rate(preds, targets) == 0.25


def test_optimizer_is_adam_with_decoupled_weight_decay(pixels):
    learn = make_learner(pixels)
    assert isinstance(learn.opt, torch.optim.AdamW)
    groups = learn.opt.param_groups
    # one group per layer group (early body, late body, head) and per decayed / not decayed
    assert [(g["layer_group"], g["weight_decay"]) for g in groups] == [
        (0, 0.01), (0, 0.0), (1, 0.01), (1, 0.0), (2, 0.01), (2, 0.0)]
    for group in groups:
        assert group["betas"] == (0.9, 0.99) and group["eps"] == 1e-5 and group["decoupled_weight_decay"]
    # fastai's wd_bn_bias=False: Learner.create_opt sets do_wd=False on norm_bias_params(model)
    no_wd = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_wd == {id(p) for p in fastai.norm_bias_params(learn.model)}
    for lg, params in enumerate(param_groups(learn.model)):
        assert {id(p) for g in groups if g["layer_group"] == lg for p in g["params"]} == {id(p) for p in params}


def biased_model(n_classes: int) -> nn.Module:
    """Convolutions with biases, so that weight decay has biases to spare."""
    body = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(4, 8, 3, bias=True), nn.ReLU()))
    body.split_at = 1
    return nn.Sequential(body, create_head(8, n_classes))


def test_weight_decay_with_zero_gradients_is_exact(pixels):
    # fastai/optimizer.py weight_decay: p *= 1 - lr·wd where do_wd; the Adam step of a zero gradient is 0.
    items, images = pixels
    dls = DataLoaders(items, images, size=28, bs=32, aug=AugSettings(do_flip=False), seed=0)
    learn = Learner(biased_model(len(dls.classes)), dls)
    lrs = [1e-3, 1e-2, 1e-1]
    learn.set_hypers(lrs, 0.9)
    before = {name: p.detach().clone() for name, p in learn.model.named_parameters()}
    for p in learn.model.parameters():
        p.grad = torch.zeros_like(p)
    learn.opt.step()
    after = dict(learn.model.named_parameters())
    decayed = {"0.0.0.weight": lrs[0], "0.1.0.weight": lrs[1], "1.4.weight": lrs[2], "1.8.weight": lrs[2]}
    spared = ["0.0.0.bias", "0.0.1.weight", "0.0.1.bias", "0.1.0.bias", "1.2.weight", "1.2.bias", "1.6.weight",
              "1.6.bias"]
    assert sorted([*decayed, *spared]) == sorted(before)
    for name, lr in decayed.items():
        assert torch.equal(after[name], before[name] * (1 - lr * 0.01)), name
    for name in spared:
        assert torch.equal(after[name], before[name]), name


def test_two_adam_steps_match_fastai(pixels):
    items, images = pixels
    dls = DataLoaders(items, images, size=28, bs=32, aug=AugSettings(do_flip=False), seed=0)
    torch.manual_seed(0)
    learn = Learner(biased_model(len(dls.classes)), dls)
    params = dict(learn.model.named_parameters())
    no_wd = {id(p) for p in fastai.norm_bias_params(learn.model)}
    states = {name: {} for name in params}
    for step, (lrs, mom) in enumerate([([1e-3, 1e-2, 3e-2], 0.95), ([2e-3, 2e-2, 5e-2], 0.9)]):
        learn.set_hypers(lrs, mom)
        lr_of = {id(p): lrs[i] for i, group in enumerate(param_groups(learn.model)) for p in group}
        grads = {name: torch.randn_like(p) for name, p in params.items()}
        expected = {name: fastai.adam_step(p.detach(), grads[name], states[name], lr_of[id(p)], mom=mom,
                                           do_wd=id(p) not in no_wd) for name, p in params.items()}
        for name, p in params.items():
            p.grad = grads[name].clone()
        learn.opt.step()
        for name, p in params.items():
            torch.testing.assert_close(p.detach().double(), expected[name], rtol=1e-5, atol=1e-7, msg=name)


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


def test_a_stop_ends_cleanly_with_metrics_so_far(pixels):
    learn = make_learner(pixels)

    def stop_in_second_epoch(event, logs):
        if event == "after_batch" and logs["iter"] == 8:
            learn.control.stop()

    learn.callbacks.append(FunctionCallback(stop_in_second_epoch))
    logs = learn.fit_one_cycle(3, 1e-3)
    assert logs["status"] == "stopped"
    assert len(learn.recorder.batches) == 9  # the stop acts before the next batch
    assert len(learn.recorder.epochs) == 1 and math.isfinite(learn.recorder.epochs[0]["valid_loss"])


def test_pause_waits_on_the_control_until_resumed(pixels):
    """The paused loop blocks in the control's condition; resume (from another thread) wakes it. No timers, no sleeps:
    the pausing thread resumes once it sees the worker waiting, and the events show nothing ran in between."""
    control = RunControl()
    learn = make_learner(pixels, control=control)
    events, waiting = [], threading.Event()
    real_wait = control.wait_while_paused

    def wait_while_paused(timeout=None):
        events.append("waiting")
        waiting.set()
        return real_wait(timeout)

    control.wait_while_paused = wait_while_paused

    def pause_at_2(event, logs):
        if event == "after_batch":
            events.append(logs["iter"])
            if logs["iter"] == 2:
                control.pause()

    learn.callbacks.append(FunctionCallback(pause_at_2))
    worker = threading.Thread(target=lambda: events.append(learn.fit_one_cycle(1, 1e-3)["status"]))
    worker.start()
    assert waiting.wait(60)
    assert worker.is_alive() and events == [0, 1, 2, "waiting"]  # held before batch 3
    events.append("resume")
    control.resume()
    worker.join(60)
    assert events == [0, 1, 2, "waiting", "resume", 3, 4, 5, "done"]
    assert not control.paused and len(learn.recorder.batches) == 6


def test_a_stop_wakes_a_paused_run(pixels):
    learn = make_learner(pixels)
    waiting = threading.Event()
    real_wait = learn.control.wait_while_paused
    learn.control.wait_while_paused = lambda timeout=None: (waiting.set(), real_wait(timeout))[1]

    def pause(event, logs):
        if event == "after_batch" and logs["iter"] == 1:
            learn.control.pause()

    learn.callbacks.append(FunctionCallback(pause))
    result = {}
    worker = threading.Thread(target=lambda: result.update(learn.fit_one_cycle(2, 1e-3)))
    worker.start()
    assert waiting.wait(60)
    learn.control.stop()
    worker.join(60)
    assert result["status"] == "stopped" and len(learn.recorder.batches) == 2


def test_callbacks_run_by_order_whatever_order_they_are_added_in(pixels):
    seen = []

    class Named(Callback):
        def __init__(self, name: str, order: int) -> None:
            self.name, self.order = name, order

        def before_batch(self, learn_, logs):
            seen.append((self.name, logs["lr"]))

    learn = make_learner(pixels, callbacks=[Named("late", 5), Named("early", -30), Named("plain", 0)])
    learn.fit_one_cycle(1, 1e-3)
    first = seen[:3]
    assert [name for name, _ in first] == ["early", "plain", "late"]
    # "early" runs before the one-cycle scheduler (order -20) sets the batch's LR; the others after it
    assert first[0][1] != first[1][1] == first[2][1] == pytest.approx(one_cycle_lr(1e-3, 25.0, 1e5, 0.25)(0))


def test_early_stopping_ends_the_fit_with_a_note_that_the_learner_keeps(pixels):
    class Worse(Callback):  # makes every epoch's validation loss worse than the last
        order = -1

        def after_epoch(self, learn_, logs):
            logs["valid_loss"] = float(logs["epoch"])

    learn = make_learner(pixels, callbacks=[Worse(), EarlyStopping(patience=1)])
    logs = learn.fit_one_cycle(5, 1e-3)
    assert logs["status"] == "done" and len(learn.recorder.epochs) == 2
    assert learn.fit_note == "Early stopping: no better validation loss for 1 epoch(s)." and "note" not in logs
    learn.fit_one_cycle(1, 1e-3)
    assert learn.fit_note is None  # every fit starts without one


def test_a_learner_that_does_not_validate_reports_no_epochs_and_keep_best_leaves_its_weights(pixels):
    learn = make_learner(pixels, callbacks=[SaveBest()])
    learn.fit_one_cycle(1, 1e-3)
    learn.validate_epochs = False
    learn.fit_one_cycle(1, 1e-3)
    after = {k: v.clone() for k, v in learn.model.state_dict().items()}
    assert len(learn.recorder.epochs) == 1 and not learn.validating
    assert all(torch.equal(after[k], v) for k, v in learn.model.state_dict().items())


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
        self.stop_training, self.fit_note, self.validating = False, None, True
        self.model = torch.nn.Linear(2, 1)

    end_fit = Learner.end_fit


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
    learn = make_learner(pixels, callbacks=[SaveBest()])
    learn.fit_one_cycle(1, 1e-3)  # so the optimizer has state to restore too
    with torch.no_grad():
        learn.model[1][4].weight.add_(0.1)  # not the weights SaveBest keeps: it must not restore those after the finder
    params = [p.detach().clone() for p in learn.model.parameters()]
    buffers = [b.detach().clone() for b in learn.model.buffers()]
    opt_state = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in learn.opt.state.items()}
    hypers = learn.hypers()
    result = learn.lr_find(num_it=12)
    assert all(torch.equal(a, b) for a, b in zip(params, learn.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, learn.model.buffers()))
    for k, v in learn.opt.state.items():
        assert all(torch.equal(opt_state[k][n], t) for n, t in v.items() if torch.is_tensor(t))
    assert learn.hypers() == hypers
    n = len(result.lrs)
    assert result.lrs == pytest.approx([sched_exp(1e-7, 10, i / 12) for i in range(n)], rel=1e-12)


def test_the_lr_finder_is_a_callback_on_the_fit_loop(pixels, monkeypatch):
    learn = make_learner(pixels)
    learn.fit_one_cycle(1, 1e-3)
    rec = learn.recorder
    before = (list(rec.batches), list(rec.epochs), rec.train_seconds, rec.train_images, learn.iter, learn.epoch)
    events = []
    learn.callbacks.append(FunctionCallback(lambda event, logs: events.append(event)))
    monkeypatch.setattr(learn, "validate", lambda: pytest.fail("the LR finder must not validate"))
    finder = LRFinder(num_it=20)
    logs = learn.fit(10, cbs=[finder], phase="lr_find")
    # 6 batches an epoch: the finder ends the fit in the middle of the 4th
    assert logs["status"] == "done" and len(finder.lrs) == len(finder.losses) == 20 and not finder.stopped_early
    assert events.count("before_epoch") == 4 and events.count("after_batch") == 20 and "after_epoch" not in events
    assert (events[0], events[-1]) == ("before_fit", "after_fit")
    assert (list(rec.batches), list(rec.epochs), rec.train_seconds, rec.train_images, learn.iter, learn.epoch) == before
    assert finder.losses[-1] == logs["smooth_loss"]  # the finder records the loop's smoothed loss


def scripted(learn: Learner, raw: list[float]) -> None:
    """train_step returns the losses of `raw` in turn (the model is never touched)."""
    losses = iter(raw)
    learn.train_step = lambda x, y: next(losses)


def falling_then_rising(n: int = 100) -> list[float]:
    """A finder-like raw loss: falls for 60 steps, then rises slowly (never 4× the best), with a little noise."""
    t = np.arange(n)
    raw = np.where(t < 60, 2.3 - 1.2 * t / 60, 1.1 + 0.03 * (t - 60)) + np.random.default_rng(0).normal(0, 0.05, n)
    return raw.tolist()


def diverging(n: int = 100) -> list[float]:
    """Falls to 0.5 by step 50, then grows by a quarter every step: the smoothed loss passes 4× its best."""
    return [2 - 1.5 * t / 50 if t < 50 else 0.5 * 1.25 ** (t - 50) for t in range(n)]


CASES = {  # name: (raw losses, the length of fastai's record, how many points fastai's lr_find keeps)
    "no trouble": (falling_then_rising(), 100, 85),
    "NaN at 40": (falling_then_rising()[:40] + [math.nan] * 60, 100, 30),
    "NaN at 80": (falling_then_rising()[:80] + [math.nan] * 20, 100, 70),
    "NaN at 93": (falling_then_rising()[:93] + [math.nan] * 7, 100, 83),
    "NaN at 97": (falling_then_rising()[:97] + [math.nan] * 3, 100, 85),
    "inf at 50": (falling_then_rising()[:50] + [math.inf] * 50, 51, 36),
    "diverges": (diverging(), None, None),
}


@pytest.mark.parametrize("case, stop_div", [(c, True) for c in CASES] + [(c, False) for c in CASES if "inf" not in c])
def test_lr_find_keeps_fastais_points_and_suggestions(pixels, case, stop_div):
    raw, record_len, n_kept = CASES[case]
    if not stop_div and case == "diverges":
        record_len = n_kept = None
    learn = make_learner(pixels)
    scripted(learn, raw)
    result = learn.lr_find(num_it=100, stop_div=stop_div)
    # fastai/callback/schedule.py: LRFinder on the same losses, then lr_find's slicing and NaN cut
    ref_lrs, ref_losses = fastai.lr_finder_record(raw, num_it=100, stop_div=stop_div)
    kept_lrs, kept_losses = fastai.lr_find_points(ref_lrs, ref_losses, num_it=100)
    if record_len is not None:
        assert (len(ref_lrs), len(kept_lrs)) == (record_len, n_kept)
    # Loupe stops at the first NaN (fastai runs on, recording NaN), and keeps the same points
    first_nan = next((i for i, x in enumerate(ref_losses) if math.isnan(x)), None)
    n_run = len(ref_lrs) if first_nan is None else first_nan + 1
    assert result.lrs == ref_lrs[:n_run]
    np.testing.assert_array_equal(result.losses, ref_losses[:n_run])
    assert result.stopped_early == (n_run < 100)
    lrs, losses = trim(result.lrs, result.losses, 100)
    assert lrs.tolist() == kept_lrs and losses.tolist() == kept_losses
    expected = {name: f(kept_lrs, kept_losses) for name, f in fastai.SUGGESTIONS.items()
                if name != "slide" or len(kept_lrs) > 15}
    assert {name: s.lr for name, s in result.suggestions.items()} == expected


def test_without_stop_div_an_inf_cuts_the_record(pixels):
    # A deliberate difference: fastai cuts its record at the first NaN only, so without stop_div an inf
    # reaches its suggestions; Loupe cuts at the first inf too (with stop_div both drop it with the last 5).
    raw = falling_then_rising()[:50] + [math.inf] * 50
    learn = make_learner(pixels)
    scripted(learn, raw)
    result = learn.lr_find(num_it=100, stop_div=False)
    assert len(result.lrs) == 100 and not result.stopped_early
    lrs, _ = trim(result.lrs, result.losses, 100)
    assert lrs.tolist() == result.lrs[10:50]


def test_lr_find_stops_at_divergence_like_fastai(pixels):
    learn = make_learner(pixels)
    scripted(learn, diverging())
    result = learn.lr_find(num_it=100)
    ref_lrs, _ = fastai.lr_finder_record(diverging(), num_it=100)
    assert result.stopped_early and len(result.lrs) == len(ref_lrs) < 100
    assert result.losses[-1] > 4 * min(result.losses) and result.losses[-2] <= 4 * min(result.losses[:-1])


def test_lr_find_runs_at_least_six_batches(pixels):
    learn = make_learner(pixels)
    scripted(learn, [2.0] * 10)
    steps = []
    result = learn.lr_find(num_it=3, on_step=lambda i, lr, loss: steps.append((i, lr, loss)))
    assert result.lrs == [sched_exp(1e-7, 10, i / 6) for i in range(6)] == fastai.lr_finder_record([2.0] * 10, 3)[0]
    assert steps == [(i + 1, lr, pytest.approx(2.0, rel=1e-12)) for i, lr in enumerate(result.lrs)]
    assert result.suggestions == {}  # lrs[0:-5] leaves a single point: too few to suggest anything


def test_lr_find_stops_when_the_loss_explodes(pixels):
    learn = make_learner(pixels)
    result = learn.lr_find(start_lr=1e-2, end_lr=1e6, num_it=60)
    assert result.stopped_early and len(result.lrs) < 60
    assert result.losses[-1] > 4 * min(result.losses) or math.isnan(result.losses[-1])


def test_lr_find_suggestions(pixels):
    learn = make_learner(pixels)
    steps = []
    result = learn.lr_find(num_it=45, on_step=lambda i, lr, loss: steps.append((i, lr, loss)))
    # 45 - 4 - 5 = 36 points after trimming: enough for all four
    assert set(result.suggestions) >= {"valley", "minimum", "steep"}
    for s in result.suggestions.values():
        assert 1e-7 <= s.lr <= 10
    assert steps == list(zip(range(1, len(result.lrs) + 1), result.lrs, result.losses))


def test_param_groups_of_the_learner_cover_the_model(pixels):
    learn = make_learner(pixels)
    ids = [id(p) for g in param_groups(learn.model) for p in g]
    assert sorted(ids) == sorted(id(p) for p in learn.model.parameters())


# ---------------------------------------------------------------- precision

def precision_learner(pixels, asked: str) -> Learner:
    items, images = pixels
    torch.manual_seed(0)
    dls = DataLoaders(items, images, size=28, bs=32, aug=AugSettings(do_flip=False), seed=0)
    return Learner(tiny_model(len(dls.classes)), dls, precision=asked)


@pytest.fixture
def cpu_bf16(monkeypatch):
    """The probe says yes: bf16 autocast runs on any CPU (emulated where it has no bf16), only `auto` and the check ask."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


def test_a_cpu_learner_is_fp32_by_default(pixels):
    learn = make_learner(pixels)
    assert (learn.precision, learn.amp_dtype, learn.scaler.is_enabled()) == ("fp32", None, False)


def test_bf16_steps_on_a_cpu_train_float32_master_weights(pixels, cpu_bf16):
    learn = precision_learner(pixels, "bf16")
    assert (learn.precision, learn.amp_dtype, learn.scaler.is_enabled()) == ("bf16", torch.bfloat16, False)
    x, y = next(learn.dls.train())
    with learn._autocast():
        assert learn.model(x).dtype == torch.bfloat16  # the arithmetic is bf16…
    before = [p.detach().clone() for p in learn.model.parameters()]
    losses = [learn.train_step(x, y) for _ in range(3)]
    params = list(learn.model.parameters())
    assert all(math.isfinite(loss) for loss in losses)
    # …the weights, their gradients and Adam's state stay float32, and the steps moved the weights
    assert {p.dtype for p in params} == {torch.float32}
    assert {p.grad.dtype for p in params if p.grad is not None} == {torch.float32}
    assert {v.dtype for state in learn.opt.state.values() for v in state.values()} == {torch.float32}
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def test_validation_under_bf16_scores_float32_logits(pixels, cpu_bf16, monkeypatch):
    learn = precision_learner(pixels, "bf16")
    learn.fit_one_cycle(1, 1e-2)
    scored = []
    cross_entropy = F.cross_entropy

    def spy(preds, targets, *args, **kwargs):
        scored.append(preds.dtype)
        return cross_entropy(preds, targets, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    metrics = learn.validate()
    assert scored == [torch.float32]
    # the same metrics from bf16 logits cast to float32 here
    learn.model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for x, y in learn.dls.valid():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = learn.model(x)
            assert out.dtype == torch.bfloat16
            outputs.append(out.float())
            targets.append(y)
    learn.model.train()
    preds, targs = torch.cat(outputs), torch.cat(targets)
    assert metrics["valid_loss"] == pytest.approx(cross_entropy(preds, targs).item(), rel=1e-6)
    assert metrics["accuracy"] == accuracy(preds, targs) and metrics["error_rate"] == error_rate(preds, targs)
    assert all(type(v) is float for v in metrics.values())


def test_fp16_on_a_cpu_trains_without_loss_scaling_where_torch_computes_in_it(pixels):
    if not precision.autocast_computes_in("cpu", torch.float16):
        with pytest.raises(UserError, match="cannot compute in fp16 on the CPU"):
            precision_learner(pixels, "fp16")
        return
    learn = precision_learner(pixels, "fp16")
    assert (learn.precision, learn.amp_dtype, learn.scaler.is_enabled()) == ("fp16", torch.float16, False)
    x, y = next(learn.dls.train())
    before = [p.detach().clone() for p in learn.model.parameters()]
    assert math.isfinite(learn.train_step(x, y))
    assert {p.dtype for p in learn.model.parameters()} == {torch.float32}
    assert any(not torch.equal(a, p) for a, p in zip(before, learn.model.parameters()))
