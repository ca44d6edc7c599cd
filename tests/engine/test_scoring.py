"""Tests for engine/train/scoring.py: one batch-scoring loop (eval mode, no gradients, fixed-size batches, modes restored)."""
import pytest
import torch
from torch import nn

from engine.data.augment import normalize
from engine.data.loaders import DataLoaders
from engine.train.scoring import eval_mode, item_inputs, model_device, score


def dropout_model() -> nn.Module:
    """A linear model with dropout and BatchNorm, so train mode would change every answer."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 4), nn.BatchNorm1d(4))


def test_score_is_the_eval_mode_forward_in_batches():
    model = dropout_model()
    x = torch.randn(10, 3, 2, 2)
    sizes = []

    def prepare(batch):
        sizes.append(len(batch))
        return batch

    logits = score(model, x, prepare, bs=4)
    assert sizes == [4, 4, 2]  # fixed-size batches, the rest last
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert logits.shape == (10, 4) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.allclose(logits, expected, atol=1e-6)
    assert not logits.requires_grad


def test_score_leaves_every_module_as_found_and_computes_no_gradients():
    model = dropout_model()
    model.train()
    model[1].eval()  # a mix of modes, as with a frozen body
    modes = [m.training for m in model.modules()]
    stats = model[3].running_mean.clone()
    with torch.enable_grad():
        score(model, torch.randn(6, 3, 2, 2), lambda b: b, bs=4)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model[3].running_mean, stats)  # eval mode: BatchNorm statistics untouched


def test_modes_are_restored_when_preparing_a_batch_fails():
    model = dropout_model()
    model.train()

    def broken(batch):
        raise ValueError("unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        score(model, [1, 2, 3], broken)
    assert all(m.training for m in model.modules())


def test_score_takes_any_sequence_and_outputs_float32():
    model = nn.Linear(3, 2).double()
    items = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]  # a plain list, as the PIL images of predict
    logits = score(model, items, lambda rows: torch.tensor(rows, dtype=torch.float64), bs=2)
    assert logits.dtype == torch.float32 and logits.shape == (3, 2)
    with torch.no_grad():
        assert torch.allclose(logits, model(torch.tensor(items, dtype=torch.float64)).float())


def test_nothing_to_score():
    assert score(dropout_model(), [], lambda b: b).shape == (0, 0)


def test_eval_mode_and_model_device():
    model = dropout_model()
    model.train()
    with eval_mode(model) as m:
        assert m is model and not any(x.training for x in model.modules())
    assert all(x.training for x in model.modules())
    assert model_device(model) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_score_runs_on_the_models_device_and_returns_cpu_logits():
    model = dropout_model()
    x = torch.randn(5, 3, 2, 2)
    on_cpu = score(model, x, lambda b: b)
    logits = score(model.cuda(), x, lambda b: b)  # inputs prepared on the CPU are moved to the model
    assert logits.device.type == "cpu" and torch.allclose(logits, on_cpu, atol=1e-5)


def test_item_inputs_are_the_validation_batches(digits_dls: DataLoaders):
    dls = digits_dls
    x_valid, _ = next(dls.valid())
    assert torch.equal(item_inputs(dls, dls.valid_idx[:dls.bs]), x_valid)
    images, _ = next(dls.valid(norm=False))
    assert torch.equal(item_inputs(dls, dls.valid_idx[:5]), normalize(images[:5]))
