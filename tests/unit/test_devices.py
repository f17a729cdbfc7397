"""The run's device choice, and moving batches there (checked on the meta device)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from longrl import devices
from longrl.config import ConfigError, load_config
from longrl.devices import DeviceError, choose_device, module_device, select_device, to_device
from longrl.models.inputs import assemble_prompt_batch
from longrl.train.prompts import place_for_forward

META = torch.device("meta")


def _no_cuda_calls(monkeypatch):
    def touched(*_args, **_kwargs):
        raise AssertionError("CUDA was queried")

    for name in ("is_available", "device_count", "set_device", "current_device"):
        monkeypatch.setattr(torch.cuda, name, touched)


def _gpus(monkeypatch, count: int, selected: list | None = None):
    """Pretend `count` GPUs; `selected` records set_device calls."""
    selected = [] if selected is None else selected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)


def test_cpu_is_chosen_without_touching_cuda(monkeypatch):
    _no_cuda_calls(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert choose_device("cpu", 3) == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


def test_auto_takes_the_gpu_of_the_local_rank(monkeypatch):
    selected: list = []
    _gpus(monkeypatch, 2, selected)
    assert choose_device("auto", 0) == torch.device("cuda", 0)
    assert choose_device("auto", 1) == torch.device("cuda", 1)
    assert choose_device("cuda", 1) == torch.device("cuda", 1)
    assert selected == []  # choosing does not select
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert select_device("auto") == torch.device("cuda", 1)
    assert selected == [torch.device("cuda", 1)]


def test_auto_without_cuda_is_the_cpu_and_cuda_without_it_is_an_error(monkeypatch):
    _gpus(monkeypatch, 0)
    assert choose_device("auto", 0) == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        choose_device("cuda", 0)


def test_more_processes_than_gpus_is_an_error(monkeypatch):
    _gpus(monkeypatch, 2)
    with pytest.raises(DeviceError, match="local rank 2 needs GPU 2 but 2 are visible"):
        choose_device("auto", 2)


def test_unknown_device_name_is_refused():
    with pytest.raises(DeviceError, match="one of"):
        choose_device("gpu", 0)
    with pytest.raises(ConfigError, match=r"trainer\.device"):
        load_config(None, ["trainer.device=gpu"])
    assert load_config(None, ["trainer.device=cpu"]).trainer.device == "cpu"


def test_parallel_context_on_the_cpu_uses_gloo_even_beside_gpus(monkeypatch):
    from longrl.parallel.mesh import default_backend, destroy_parallel, init_parallel

    assert default_backend(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    assert default_backend(torch.device("cpu")) == "gloo"
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()
    _no_cuda_calls(monkeypatch)  # GPUs or not, "cpu" never asks
    try:
        ctx = init_parallel(timeout=timedelta(seconds=5), device="cpu")
        assert ctx.device == torch.device("cpu") and ctx.backend == "gloo"
    finally:
        destroy_parallel()


def _video_input():
    rows = [[5, 6, 7], [8, 9]]
    text = assemble_prompt_batch(rows, SimpleNamespace(), pad_token_id=0)
    # A video batch's tensors as the builder leaves them, on the CPU.
    return text, {
        "pixel_values_videos": torch.ones(16, 4),
        "video_grid_thw": torch.tensor([[1, 4, 4]]),
        "second_per_grid_ts": torch.tensor([1.0], dtype=torch.float64),
    }


def _tensor_fields(model_input):
    return {
        name: value for name, value in vars(model_input).items() if isinstance(value, torch.Tensor)
    }


def test_to_device_moves_inputs_embeddings_and_responses():
    text, _ = _video_input()
    moved = to_device(text, META)
    fields = _tensor_fields(moved)
    assert {"input_ids", "attention_mask", "position_ids", "rope_deltas"} <= fields.keys()
    assert all(t.device == META for t in fields.values())
    assert all(t.device.type == "cpu" for t in _tensor_fields(text).values())  # a copy
    embeds = [torch.ones(2, 3), torch.ones(4, 3)]
    assert [e.device for e in to_device(embeds, META)] == [META, META]
    ids, mask = to_device((torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5)), META)
    assert ids.device == mask.device == META and ids.dtype == torch.long
    assert to_device(None, META) is None
    here = torch.ones(2)
    assert to_device(here, torch.device("cpu")) is here  # no copy when already there
    with pytest.raises(TypeError, match="cannot move"):
        to_device(object(), META)


def test_place_for_forward_leaves_pixels_behind_only_when_embeddings_replace_them():
    from dataclasses import replace

    text, vision = _video_input()
    model_input = replace(text, **vision)
    embeds = [torch.ones(4, 3)]
    placed, placed_embeds = place_for_forward(model_input, embeds, META)
    assert placed.pixel_values_videos is None
    assert placed.video_grid_thw.device == META and placed.input_ids.device == META
    assert [e.device for e in placed_embeds] == [META]
    encoded_here, none = place_for_forward(model_input, None, META)
    assert none is None and encoded_here.pixel_values_videos.device == META


def test_module_device_reads_parameters_then_buffers():
    assert module_device(torch.nn.Linear(2, 2, device=META)) == META
    norm = torch.nn.BatchNorm1d(2, affine=False, device=META)
    assert module_device(norm) == META
    assert module_device(torch.nn.Identity()) == torch.device("cpu")


def test_checkpoint_tensors_are_detached_contiguous_cpu_copies():
    weight = torch.nn.Parameter(torch.arange(6.0).view(2, 3).t())
    (saved,) = devices.cpu_tensors({"w": weight}).values()
    assert saved.device.type == "cpu" and saved.is_contiguous() and not saved.requires_grad
    assert torch.equal(saved, weight.detach())
