"""GPU settings as trainer keys: what each means, and that each is a no-op on a CPU."""

import pytest
import torch
from omegaconf import OmegaConf

from bof.config import auto_workers, validate_trainer
from bof.engine.run_setup import autocast_dtype, compiled
from bof.train import build_model


@pytest.mark.parametrize(
    ("amp", "device", "dtype"),
    [
        ("bf16", "cuda", torch.bfloat16),
        ("fp16", "cuda", torch.float16),
        (False, "cuda", None),
        ("bf16", "cpu", None),
        ("fp16", "cpu", None),
    ],
)
def test_amp_picks_the_autocast_dtype_on_cuda_and_float32_elsewhere(amp, device, dtype):
    assert autocast_dtype(amp, torch.device(device)) is dtype


def test_amp_accepts_bf16_fp16_false_and_the_old_boolean():
    assert validate_trainer(OmegaConf.create({})).amp == "bf16"  # the default on CUDA
    assert validate_trainer(OmegaConf.create({"amp": True})).amp == "fp16"
    with pytest.raises(ValueError, match="trainer.amp must be bf16, fp16 or false"):
        validate_trainer(OmegaConf.create({"amp": "int8"}))


def test_workers_default_to_the_cpus_shared_by_the_local_processes(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert validate_trainer(OmegaConf.create({})).num_workers == auto_workers(1) >= 1
    assert auto_workers(10_000) == 1  # never 0: one worker at least
    with pytest.raises(ValueError, match="trainer.num_workers must be auto or an integer"):
        validate_trainer(OmegaConf.create({"num_workers": "many"}))


def test_compile_is_a_no_op_on_the_cpu():
    model = torch.nn.Linear(2, 2)
    assert compiled(model, True, torch.device("cpu")) is model


@pytest.mark.parametrize("model", ["yolov3", "faster_rcnn_r50_c4"])
def test_channels_last_reaches_every_model_family(make_cfg, model):
    net = build_model(make_cfg(f"model={model}"), 3, torch.device("cpu"), channels_last=True)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
