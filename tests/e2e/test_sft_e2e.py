"""`longrl sft` on the tiny Qwen2.5-VL and synthetic videos: masking, accumulation,
packing, learning, checkpoints, exact resume, and RL starting from the result."""

from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from longrl.config import load_config
from longrl.config.data import DataConfig
from longrl.config.sft import SftConfig
from longrl.config.worker import ModelConfig
from longrl.data.dataset import load_dataset
from longrl.models.inputs import forward_logits
from longrl.train.batches import PromptOrder
from longrl.train.metrics import read_metrics
from longrl.train.policy import load_policy
from longrl.train.sft import accumulate_gradients, run_sft
from longrl.train.sft_data import draw_step_batch, target_text
from longrl.train.sft_forward import micro_batch_input, packed_target_logits, padded_target_logits
from longrl.train.sft_loss import token_cross_entropy
from longrl.train.timing import PhaseTimer
from tests.e2e.conftest import rl_overrides

FAST_VIDEO = {"data.fps": 2, "data.max_frames": 8, "data.min_frames": 4}


def sft_overrides(model, data_file, out, **extra):
    base = {
        "model.model_path": str(model),
        "data.train_files": str(data_file),
        **FAST_VIDEO,
        "sft.batch_size": 2,
        "sft.micro_batch_size": 1,
        "trainer.max_steps": 3,
        "trainer.output_dir": str(out),
        "trainer.logger": "[jsonl]",
        "optim.lr": 1e-3,
        "optim.lr_warmup_ratio": 0.0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _comparable(rows):
    return [
        {k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows
    ]


@pytest.fixture(scope="module")
def policy(tiny_vl_checkpoint):
    data = DataConfig(fps=2, max_frames=8, min_frames=4)
    return load_policy(ModelConfig(model_path=str(tiny_vl_checkpoint)), data), data


@pytest.fixture(scope="module")
def four_items(policy, synth_data):
    """Four SFT samples of different lengths, decoded and encoded once."""
    pol, data = policy
    samples, _ = load_dataset(synth_data / "sft.jsonl")
    order = PromptOrder(samples, seed=0, shuffle=False)
    items = draw_step_batch(pol, order, 4, data, Counter(), PhaseTimer())
    lengths = {len(i.prompt_ids) + len(i.responses[0]) for i in items}
    assert len(lengths) > 1, "the check needs samples of different lengths (padding)"
    return items


def test_loss_scores_only_the_assistant_target(policy, four_items):
    pol, _ = policy
    tokenizer = pol.tokenizer
    items = four_items[:2]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = [target_text(item.sample, thinking=True) for item in items]
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
    assert texts[0].startswith("<think>") and texts[0].endswith("</answer>")

    model_input, embeds = micro_batch_input(items, pol)
    assert int(model_input.response_mask.sum()) == sum(len(e) for e in expected)
    with torch.no_grad():
        out = padded_target_logits(pol.model, model_input, embeds)
        packed = packed_target_logits(pol.model, model_input, embeds)
    assert out.labels.tolist() == expected[0] + expected[1]
    assert tokenizer.decode(expected[0]) == texts[0] + "<|im_end|>"
    assert packed.labels.tolist() == out.labels.tolist()
    assert out.padding_tokens > 0 and packed.padding_tokens == 0
    assert out.real_tokens == packed.real_tokens == int(model_input.attention_mask.sum())
    # The prompt (video included) is never scored: it ends at the assistant header.
    width = model_input.prompt_width
    for row in range(2):
        prompt_ids = model_input.input_ids[row, :width][model_input.attention_mask[row, :width] > 0]
        assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
        assert int(model_input.response_mask[row, :width].sum()) == 0

    # By hand: -log p(target token | everything before it), averaged over target tokens.
    with torch.no_grad():
        full = torch.log_softmax(forward_logits(pol.model, model_input, embeds).float(), -1)
    by_hand = []
    for row, ids in enumerate(expected):
        for k, token in enumerate(ids):
            by_hand.append(-full[row, width - 1 + k, token])
    manual = torch.stack(by_hand).mean()
    loss = token_cross_entropy(out.logits, out.labels)
    assert loss.count == len(by_hand)
    torch.testing.assert_close(loss.summed / loss.count, manual, rtol=1e-5, atol=1e-6)
    packed_loss = token_cross_entropy(packed.logits, packed.labels)
    torch.testing.assert_close(packed_loss.summed / packed_loss.count, manual, rtol=1e-5, atol=1e-6)


def _gradients(pol, items, micro_batch_size, packing):
    pol.model.zero_grad(set_to_none=True)
    stats = accumulate_gradients(pol, items, micro_batch_size=micro_batch_size, packing=packing)
    grads = {
        name: p.grad.detach().clone()
        for name, p in pol.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    pol.model.zero_grad(set_to_none=True)
    return stats, grads


def test_accumulation_and_packing_equal_one_big_batch(policy, four_items):
    pol, _ = policy
    big, reference = _gradients(pol, four_items, 4, packing=False)
    assert not any("visual" in name for name in reference)  # frozen ViT gets no gradient
    assert big["tokens/padding"] > 0 and big["batch/micro_batches"] == 1
    for micro, packing in ((1, False), (2, False), (4, True), (2, True)):
        stats, grads = _gradients(pol, four_items, micro, packing)
        assert stats["batch/micro_batches"] == 4 // micro
        assert stats["tokens/target"] == big["tokens/target"]
        assert stats["loss"] == pytest.approx(big["loss"], rel=1e-5)
        assert stats["token_accuracy"] == big["token_accuracy"]
        if packing:
            assert stats["tokens/padding"] == 0
        assert grads.keys() == reference.keys()
        for name, grad in grads.items():
            scale = float(reference[name].abs().max())
            torch.testing.assert_close(grad, reference[name], rtol=1e-5, atol=1e-6 * scale)


def test_sft_learns_a_handful_of_samples(tiny_vl_checkpoint, four_items):
    """20 optimizer steps on four samples (decoded and encoded once): the loss must fall."""
    from longrl.config.sft import SftOptimConfig, SftSection
    from longrl.train.optim import build_optimizer, build_scheduler
    from longrl.train.sft import sft_step

    torch.manual_seed(0)
    pol = load_policy(ModelConfig(model_path=str(tiny_vl_checkpoint)), DataConfig())
    pol.model.train()
    optim = SftOptimConfig(lr=1e-3, lr_warmup_ratio=0.0, lr_scheduler="constant")
    optimizer = build_optimizer(pol.model, optim)
    scheduler = build_scheduler(optimizer, optim, 20)
    section = SftSection(batch_size=4, micro_batch_size=2)
    rows = [
        sft_step(pol, optimizer, scheduler, four_items, section, PhaseTimer()) for _ in range(20)
    ]
    losses = [r["loss"] for r in rows]
    assert losses[-1] < 0.7 * losses[0], losses
    assert rows[-1]["token_accuracy"] > rows[0]["token_accuracy"] + 0.1


@pytest.fixture(scope="module")
def three_step_run(tiny_vl_checkpoint, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    overrides = sft_overrides(tiny_vl_checkpoint, synth_data / "sft.jsonl", out)
    return run_sft(load_config(None, overrides, SftConfig))


REQUIRED_METRICS = {
    "loss",
    "token_accuracy",
    "actor/grad_norm",
    "actor/lr",
    "tokens/target",
    "tokens/padding",
    "throughput/tokens_per_s",
    "time/data_s",
    "time/encode_s",
    "time/forward_backward_s",
    "time/optimizer_s",
    "time/step_s",
    "data/skipped_total",
    "vision/encode_calls",
    "vision/items_encoded",
}


def test_three_steps_log_metrics_and_checkpoint_with_the_vision_tower_frozen(
    three_step_run, tiny_vl_checkpoint
):
    rows = read_metrics(three_step_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert not REQUIRED_METRICS - set(row), REQUIRED_METRICS - set(row)
        # Each video encoded once per step, in one ViT call.
        assert row["vision/encode_calls"] == 1 and row["vision/items_encoded"] == 2
        assert row["data/skipped_total"] == 0 and row["actor/grad_norm"] > 0
    final = three_step_run / "checkpoints" / "step_00000003"
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "COMPLETE"):
        assert (final / name).is_file(), name
    from longrl.models.load import load_model

    before = load_model(tiny_vl_checkpoint).state_dict()
    after = load_file(str(final / "model.safetensors"))
    changed = [k for k in after if "visual" not in k and not torch.equal(before[k], after[k])]
    assert len(changed) > 10
    frozen = [k for k in after if "visual" in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_rl_starts_from_the_exported_sft_result(three_step_run, synth_data, tmp_path):
    from longrl.models.load import load_model
    from longrl.train.export import export_hf
    from longrl.train.rl import run_rl

    exported = export_hf(three_step_run, tmp_path / "sft_model")
    trained = load_file(str(three_step_run / "checkpoints" / "step_00000003" / "model.safetensors"))
    state = load_model(exported).state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    rl = rl_overrides(
        exported, synth_data, tmp_path / "rl", **{"trainer.max_steps": 1, "worker.rollout.n": 2}
    )
    (row,) = read_metrics(run_rl(load_config(None, rl)) / "metrics.jsonl")
    assert row["step"] == 1 and row["actor/grad_norm"] > 0


def test_trainable_vision_tower_is_trained(tiny_vl_checkpoint, synth_data, tmp_path):
    overrides = sft_overrides(
        tiny_vl_checkpoint,
        synth_data / "sft.jsonl",
        tmp_path / "run",
        **{"trainer.max_steps": 1, "model.freeze_vision_tower": "false", "sft.packing": "true"},
    )
    run_dir = run_sft(load_config(None, overrides, SftConfig))
    from longrl.models.load import load_model

    before = load_model(tiny_vl_checkpoint).state_dict()
    after = load_file(str(run_dir / "checkpoints" / "step_00000001" / "model.safetensors"))
    visual = [k for k in after if "visual" in k]
    assert any(not torch.equal(before[k], after[k]) for k in visual)


def test_resume_after_a_crash_continues_exactly(
    tiny_vl_checkpoint, synth_data, tmp_path, monkeypatch
):
    import longrl.train.sft as sft_module

    common = {"trainer.max_steps": 4, "trainer.save_freq": 1, "trainer.save_limit": -1}
    data_file = synth_data / "sft.jsonl"
    straight = run_sft(
        load_config(
            None, sft_overrides(tiny_vl_checkpoint, data_file, tmp_path / "a", **common), SftConfig
        )
    )
    crashed = load_config(
        None, sft_overrides(tiny_vl_checkpoint, data_file, tmp_path / "b", **common), SftConfig
    )
    real_save = sft_module.save_checkpoint

    def crash_at_step_3(run_dir, *, step, **kwargs):
        if step == 3:
            raise RuntimeError("simulated crash after the step-3 update")
        return real_save(run_dir, step=step, **kwargs)

    monkeypatch.setattr(sft_module, "save_checkpoint", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sft(crashed)
    monkeypatch.setattr(sft_module, "save_checkpoint", real_save)
    resumed = run_sft(crashed)  # trainer.resume=auto picks step 2

    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step_00000004" / name))
        b = load_file(str(resumed / "checkpoints" / "step_00000004" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert _comparable(rows) == _comparable(read_metrics(straight / "metrics.jsonl"))


def test_undecodable_video_is_skipped_counted_and_the_batch_topped_up(
    tiny_vl_checkpoint, synth_data, tmp_path
):
    import json

    records = [json.loads(line) for line in (synth_data / "sft.jsonl").read_text().splitlines()]
    records = records[:3]
    for record in records:
        record["videos"] = [str(synth_data / v) for v in record["videos"]]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    records[0]["videos"] = [str(bad)]
    data_file = tmp_path / "with_bad.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = sft_overrides(
        tiny_vl_checkpoint,
        data_file,
        tmp_path / "run",
        **{"trainer.max_steps": 1, "data.shuffle": "false"},
    )
    (row,) = read_metrics(run_sft(load_config(None, overrides, SftConfig)) / "metrics.jsonl")
    assert row["data/skipped/video_error"] == 1 and row["data/skipped_total"] == 1
    assert row["batch/samples"] == 2 and row["vision/items_encoded"] == 2


def test_tiny_sft_recipe_runs_one_step(tiny_vl_checkpoint, synth_data, tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "configs" / "tiny_sft.yaml"
    overrides = [
        f"model.model_path={tiny_vl_checkpoint}",
        f"data.train_files={synth_data / 'sft.jsonl'}",
        f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.max_steps=1",
        "trainer.logger=[jsonl]",
    ]
    (row,) = read_metrics(run_sft(load_config(recipe, overrides, SftConfig)) / "metrics.jsonl")
    assert row["batch/samples"] == 8 and row["actor/grad_norm"] > 0
