"""Precision: the spec's setting and its flag, what `auto` picks per device, what a run asks for and reports."""
from __future__ import annotations

import json

import pytest
import torch

from engine.train import precision
from engine.cli import FLAG_FIELDS, build_parser, main, spec_from_args
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.train.precision import autocast_computes_in, cpu_has_bf16, resolve_precision, uses_loss_scaling
from engine.spec import PRECISIONS, RunSpec, load_spec, override, validate
from engine.train.run import train_run

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU-capability probe answers: cpu_bf16(True) or cpu_bf16(False)."""
    def set_probe(answer: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: answer)
    return set_probe


# ---------------------------------------------------------------- the spec and the flag

def test_the_spec_asks_for_auto_by_default_and_keeps_what_is_asked():
    assert RunSpec().device.precision == "auto" and PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    spec = override(RunSpec(), {"device.precision": "bf16"})
    assert RunSpec.from_json(spec.to_json()) == spec and spec.flat()["device.precision"] == "bf16"
    assert RunSpec.from_dict({"device": {"threads": 2}}).device.precision == "auto"  # a spec from before the field


@pytest.mark.parametrize("value, message", [("fp8", "device.precision must be one of auto, fp32, bf16, fp16"),
                                            ("FP32", "device.precision must be one of")])
def test_validate_refuses_an_unknown_precision(value, message):
    with pytest.raises(UserError, match=message):
        validate(override(RunSpec(), {"device.precision": value}))


def test_a_precision_that_is_not_text_is_refused():
    with pytest.raises(UserError, match="“device.precision” must be text"):
        RunSpec.from_dict({"device": {"precision": 16}})


@pytest.mark.parametrize("value", ["auto", "fp32", "bf16", "fp16"])
def test_the_precision_flag_sets_the_spec(value):
    assert FLAG_FIELDS["precision"] == "device.precision"
    spec = spec_from_args(build_parser().parse_args(["train", "--precision", value]))
    assert spec == override(RunSpec(), {"device.precision": value})


def test_an_unknown_precision_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "--precision", "fp8"])
    assert exit_.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_the_precision_flag_overrides_a_spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(override(RunSpec(), {"device.precision": "bf16"}).to_json())
    assert spec_from_args(build_parser().parse_args(["spec", "--spec", str(path)])).device.precision == "bf16"
    args = build_parser().parse_args(["spec", "--spec", str(path), "--precision", "fp32"])
    assert spec_from_args(args).device.precision == "fp32"


# ---------------------------------------------------------------- what each device uses

@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_is_fp32_on_a_cpu_whatever_the_probe_says(cpu_bf16, has_bf16):
    """bf16 measured slower than fp32 on the CPUs Loupe was benchmarked on (engine/train/precision.py, CPU_AUTO)."""
    cpu_bf16(has_bf16)
    assert precision.CPU_AUTO == "fp32"
    assert resolve_precision("auto", CPU) == "fp32"


@pytest.mark.parametrize("has_bf16, used", [(True, "bf16"), (False, "fp32")])
def test_were_bf16_measured_faster_auto_would_follow_the_probe(cpu_bf16, monkeypatch, has_bf16, used):
    cpu_bf16(has_bf16)
    monkeypatch.setattr(precision, "CPU_AUTO", "bf16")
    assert resolve_precision("auto", CPU) == used


def test_bf16_on_a_cpu_without_it_says_so(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("bf16", CPU) == "bf16"
    cpu_bf16(False)
    with pytest.raises(UserError, match="This CPU has no bfloat16 arithmetic.*Choose fp32, or auto"):
        resolve_precision("bf16", CPU)


def test_fp16_on_a_cpu_runs_where_torch_computes_in_it_and_is_refused_plainly_where_not(monkeypatch):
    if autocast_computes_in("cpu", torch.float16):
        assert resolve_precision("fp16", CPU) == "fp16"
    monkeypatch.setattr(precision, "autocast_computes_in", lambda device_type, dtype: False)
    with pytest.raises(UserError, match=r"cannot compute in fp16 on the CPU\. Choose fp32, or auto"):
        resolve_precision("fp16", CPU)


def test_the_autocast_probe_sees_what_torch_computes_in():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        computes_bf16 = torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert autocast_computes_in("cpu", torch.bfloat16) == computes_bf16
    assert autocast_computes_in("cpu", torch.float64) is False  # autocast warns and turns itself off


def test_fp32_is_used_everywhere_it_is_asked_for(cpu_bf16):
    cpu_bf16(False)
    for device in (CPU, CUDA, torch.device("mps")):
        assert resolve_precision("fp32", device) == "fp32"


@pytest.mark.parametrize("gpu_bf16, used", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_mixed_precision(monkeypatch, gpu_bf16, used):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: gpu_bf16)
    assert resolve_precision("auto", CUDA) == used
    assert uses_loss_scaling(used, CUDA) == (used == "fp16")


def test_bf16_on_a_gpu_without_it_says_so(monkeypatch):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: False)
    with pytest.raises(UserError, match="This GPU has no bfloat16 arithmetic. Choose fp16"):
        resolve_precision("bf16", CUDA)


def test_auto_on_mps_stays_fp32():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_only_fp16_on_cuda_scales_the_loss():
    assert [(p, d.type) for p in ("fp32", "bf16", "fp16") for d in (CPU, CUDA) if uses_loss_scaling(p, d)] == \
        [("fp16", "cuda")]


def test_an_unknown_precision_is_refused_by_the_learner_too():
    with pytest.raises(UserError, match="device.precision must be one of"):
        resolve_precision("half", CPU)


@pytest.mark.parametrize("flags, has", [({"fpu", "avx512f", "avx2"}, False), ({"avx512f", "avx512_bf16"}, True),
                                        ({"amx_bf16", "amx_tile"}, True), ({"fp", "asimd", "bf16"}, True)])
def test_the_cpu_probe_reads_the_cpu_flags(monkeypatch, flags, has):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    cpu_has_bf16.cache_clear()
    try:
        assert cpu_has_bf16() is has
    finally:
        cpu_has_bf16.cache_clear()


# ---------------------------------------------------------------- a run reports what it used

@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory, write_digits):
    return write_digits(tmp_path_factory.mktemp("precision-digits"), count=200)


def tiny_run(digits_dir, asked: str) -> RunSpec:
    return override(RunSpec(), {"data.source": str(digits_dir), "data.size": 16, "data.presize": 16, "data.bs": 32,
                                "model.pretrained": False, "train.schedule": "one_cycle", "train.epochs": 1,
                                "train.seed": 0, "device.device": "cpu", "device.threads": 1,
                                "device.precision": asked})


@pytest.mark.parametrize("asked, used", [("auto", "fp32"), ("bf16", "bf16")])
def test_a_run_records_the_precision_asked_for_and_reports_the_one_used(digits_dir, tmp_path, cpu_bf16, asked, used):
    cpu_bf16(True)
    result = train_run(tiny_run(digits_dir, asked), PresizeCache(max_entries=1), None, out_dir=tmp_path / "run")
    assert result["precision"] == used and result["accuracy"] is not None
    assert load_spec(tmp_path / "run").device.precision == asked
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == used


def test_the_cli_says_plainly_when_this_cpu_cannot_do_bf16(digits_dir, tmp_path, cpu_bf16, capsys):
    cpu_bf16(False)
    code = main(["train", "--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--size", "16",
                 "--presize", "16", "--epochs", "1", "--device", "cpu", "--precision", "bf16", "--out", str(tmp_path / "r")])
    assert code == 2 and "error: This CPU has no bfloat16 arithmetic" in capsys.readouterr().err
