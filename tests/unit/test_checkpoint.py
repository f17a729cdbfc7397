import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from longrl.train import checkpoint as ckpt


def _model(seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def _train_state(seed=0, steps=2):
    model = _model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for _ in range(steps):
        loss = model(input_ids=torch.randint(0, 64, (2, 6))).logits.square().mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def _save(run_dir, step, model, optimizer, scheduler, **kwargs):
    return ckpt.save_checkpoint(
        run_dir,
        step=step,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        data_state={"epoch": 0, "position": step * 4},
        config_yaml="trainer: {seed: 1}\n",
        **kwargs,
    )


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = _train_state()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = _save(tmp_path, 2, model, optimizer, scheduler)
    expected_draws = (torch.rand(3), random.random(), np.random.rand())

    fresh_model, fresh_opt, fresh_sched = _train_state(seed=1, steps=1)
    state = ckpt.load_checkpoint(
        path, model=fresh_model, optimizer=fresh_opt, scheduler=fresh_sched
    )
    assert state.step == 2 and state.data == {"epoch": 0, "position": 8}
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # Tied weights stay tied after loading.
    assert fresh_model.lm_head.weight.data_ptr() == fresh_model.model.embed_tokens.weight.data_ptr()
    for group_a, group_b in zip(optimizer.param_groups, fresh_opt.param_groups, strict=True):
        assert group_a["lr"] == group_b["lr"]
    for p_a, p_b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p_a][key], fresh_opt.state[p_b][key])
    assert fresh_sched.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert random.random() == expected_draws[1]
    assert np.random.rand() == expected_draws[2]


def test_latest_pointer_and_retention(tmp_path):
    model, optimizer, scheduler = _train_state()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, optimizer, scheduler, keep=2)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003"
    kept = sorted(p.name for p in ckpt.checkpoint_root(tmp_path).glob("step_*"))
    assert kept == ["step_00000002", "step_00000003"]


def test_failure_mid_save_keeps_previous_latest(tmp_path, monkeypatch):
    model, optimizer, scheduler = _train_state()
    _save(tmp_path, 1, model, optimizer, scheduler)
    calls = {"n": 0}
    real_save = ckpt.save_file

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2, model, optimizer, scheduler)
    monkeypatch.setattr(ckpt, "save_file", real_save)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000001"
    # The next save removes the leftover temporary directory.
    _save(tmp_path, 2, model, optimizer, scheduler)
    leftovers = [p for p in ckpt.checkpoint_root(tmp_path).iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_incomplete_directory_is_never_loaded(tmp_path):
    model, optimizer, scheduler = _train_state()
    _save(tmp_path, 1, model, optimizer, scheduler)
    fake = ckpt.checkpoint_root(tmp_path) / "step_00000009"
    fake.mkdir()
    (ckpt.checkpoint_root(tmp_path) / ckpt.LATEST).write_text("step_00000009")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000001"
    with pytest.raises(FileNotFoundError, match="not a complete"):
        ckpt.load_checkpoint(fake, model=model, optimizer=None, scheduler=None)


def test_wrong_model_is_refused_with_source(tmp_path):
    model, optimizer, scheduler = _train_state()
    path = _save(tmp_path, 1, model, optimizer, scheduler)
    other = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        ckpt.load_checkpoint(path, model=other, optimizer=None, scheduler=None)


def _plain_model():
    # Plain torch (no transformers import) keeps each writer process start cheap.
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 8))


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_latest(tmp_path):
    writer = textwrap.dedent(
        f"""
        import torch
        from longrl.train import checkpoint as ckpt
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 8))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.randn(2, 1024)).sum().backward()
        optimizer.step()
        latest = ckpt.latest_checkpoint({str(tmp_path)!r})
        step = int(latest.name.split("_")[1]) if latest else 0  # resume numbering, as the trainer
        while True:
            step += 1
            ckpt.save_checkpoint({str(tmp_path)!r}, step=step, model=model, optimizer=optimizer,
                                 scheduler=None, data_state={{}}, config_yaml="", keep=2)
            print(step, flush=True)
        """
    )
    rng = random.Random(0)
    previous = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
        proc.stdout.readline()  # at least one checkpoint exists
        time.sleep(rng.uniform(0.01, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        latest = ckpt.latest_checkpoint(tmp_path)
        assert latest is not None
        model = _plain_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        state = ckpt.load_checkpoint(latest, model=model, optimizer=optimizer, scheduler=None)
        assert state.step > previous  # progress survives every kill
        previous = state.step
        complete = list(ckpt.checkpoint_root(tmp_path).glob("step_*"))
        assert all(
            (p / "model.safetensors").is_file() for p in complete if (p / "COMPLETE").is_file()
        )
