"""The trainers put their work on the run device: one RL step and one SFT step with the
model on a simulated second device (`simulated_device`), where an op mixing it with CPU
tensors raises as CUDA would. Every forward of the policy, the reference, their vision
towers and input embeddings is checked by a hook: each tensor argument is on the device.
"""

from __future__ import annotations

import pytest
import torch

import longrl.devices
import longrl.train.checkpoint
import longrl.train.policy
import longrl.train.rl
import longrl.train.sft
from longrl.config import load_config
from longrl.config.sft import SftConfig
from longrl.eval import evaluate
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl
from longrl.train.sft import run_sft
from tests.e2e.conftest import rl_overrides
from tests.e2e.simulated_device import (
    SIMULATED,
    DeviceMismatch,
    is_on_device,
    simulated_device,
)
from tests.e2e.test_sft_e2e import sft_overrides


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class ForwardWatch:
    """Forward pre-hooks asserting every tensor argument is on the model's device."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def watch(self, model: torch.nn.Module, name: str) -> None:
        assert next(model.parameters()).device == SIMULATED, f"{name} was not moved"
        modules = {name: model, f"{name}.embed_tokens": model.get_input_embeddings()}
        visual = getattr(getattr(model, "model", None), "visual", None)
        if visual is not None:
            modules[f"{name}.visual"] = visual
        for label, module in modules.items():
            self.calls[label] = 0
            module.register_forward_pre_hook(self._hook(label), with_kwargs=True)

    def _hook(self, label: str):
        def check(module, args, kwargs):
            device = next(module.parameters()).device
            for tensor in _tensors((args, kwargs)):
                assert tensor.device == device, (
                    f"{label}: an input of shape {tuple(tensor.shape)} is on {tensor.device}, "
                    f"the weights on {device}"
                )
            self.calls[label] += 1

        return check


@pytest.fixture
def fake_gpu(monkeypatch):
    """trainer.device=cuda resolves to the simulated device; checkpoint files get only
    CPU tensors; returns the forward watch the loaders register their models with."""
    watch = ForwardWatch()

    def choose_device(requested="auto", rank_on_node=0):
        assert requested == "cuda", "the run's trainer.device should reach the device choice"
        return SIMULATED

    def saved_on_cpu(tensors, path, *args, **kwargs):
        moved = [name for name, tensor in tensors.items() if is_on_device(tensor)]
        assert not moved, f"{path}: device tensors written: {moved[:3]}"
        return real_save(tensors, path, *args, **kwargs)

    real_save = longrl.train.checkpoint.save_file
    monkeypatch.setattr(longrl.devices, "choose_device", choose_device)
    monkeypatch.setattr(longrl.train.checkpoint, "save_file", saved_on_cpu)
    for module, name, label in (
        (longrl.train.rl, "load_policy", "load_policy"),
        (longrl.train.rl, "load_reference", "load_reference"),
        (longrl.train.sft, "load_policy", "load_policy"),
        (longrl.train.policy, "load_policy", "eval_policy"),  # eval imports it when it runs
    ):
        monkeypatch.setattr(module, name, _watched(getattr(module, name), watch, label))
    with simulated_device():
        yield watch


def _watched(load, watch: ForwardWatch, name: str):
    def loaded(*args, **kwargs):
        out = load(*args, **kwargs)
        watch.watch(out if isinstance(out, torch.nn.Module) else out.model, name)
        return out

    return loaded


def test_simulation_refuses_a_cpu_tensor_beside_a_device_tensor():
    with simulated_device():
        on_device = torch.ones(3).to(SIMULATED)
        assert on_device.device == SIMULATED and (on_device * 2).device == SIMULATED
        assert torch.zeros(2, device=SIMULATED).device == SIMULATED
        assert on_device.cpu().device == torch.device("cpu")
        with pytest.raises(DeviceMismatch):
            torch.cat([on_device, torch.ones(3)])
        with pytest.raises(DeviceMismatch):
            torch.nn.Linear(3, 2).to(SIMULATED)(torch.ones(1, 3))
        assert (on_device + torch.tensor(1.0)).device == SIMULATED  # 0-dim may mix, as in CUDA


def test_rl_step_runs_on_the_run_device(fake_gpu, tiny_vl_checkpoint, synth_data, tmp_path):
    # Old log-probs (2 mini-batches), a reference with KL in the reward (REINFORCE++), a
    # trainable vision tower (pixels encoded in the update), a checkpoint, a resumed step
    # (weights and AdamW state read back onto the device) and an eval of the checkpoint.
    overrides = rl_overrides(
        tiny_vl_checkpoint,
        synth_data,
        tmp_path / "run",
        **{
            "trainer.device": "cuda",
            "trainer.max_steps": 1,
            "trainer.save_freq": 1,
            "worker.rollout.n": 2,
            "worker.actor.global_batch_size": 1,
            "algorithm.adv_estimator": "reinforce_plus_plus",
            "algorithm.use_kl_loss": "false",
            "worker.actor.model.freeze_vision_tower": "false",
            "data.max_frames": 4,
        },
    )
    run_dir = run_rl(load_config(None, overrides))
    (row,) = read_metrics(run_dir / "metrics.jsonl")
    assert row["step"] == 1 and "kl" in row
    assert (run_dir / "checkpoints" / "step_00000001" / "COMPLETE").is_file()
    calls = dict(fake_gpu.calls)
    # Rollout, old log-probs, update: the policy; the reference re-encodes the videos.
    assert calls["load_policy"] >= 3 and calls["load_policy.visual"] >= 2, calls
    assert calls["load_reference"] >= 1 and calls["load_reference.visual"] >= 1, calls

    resumed = run_rl(load_config(None, [*overrides, "trainer.max_steps=2"]))
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [1, 2]

    report = evaluate(
        run_dir, synth_data / "eval.jsonl", max_samples=2, max_new_tokens=2,
        data_overrides={"max_frames": 4}, progress=False, device="cuda",
    )  # fmt: skip
    assert report.settings["device"] == str(SIMULATED)
    assert fake_gpu.calls["eval_policy.visual"] >= 1, fake_gpu.calls


@pytest.mark.parametrize("packing", [False, True])
def test_sft_step_runs_on_the_run_device(
    fake_gpu, tiny_vl_checkpoint, synth_data, tmp_path, packing
):
    overrides = sft_overrides(
        tiny_vl_checkpoint,
        synth_data / "sft.jsonl",
        tmp_path / "sft",
        **{"trainer.device": "cuda", "trainer.max_steps": 1, "sft.packing": packing},
    )
    run_dir = run_sft(load_config(None, overrides, schema=SftConfig))
    (row,) = read_metrics(run_dir / "metrics.jsonl")
    assert row["step"] == 1 and row["loss"] > 0
    assert fake_gpu.calls["load_policy"] == 2, fake_gpu.calls  # one forward per micro-batch
    assert fake_gpu.calls["load_policy.visual"] >= 1, fake_gpu.calls
