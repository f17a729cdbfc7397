"""Ulysses sequence parallelism on 2 and 4 gloo processes equals one process.

Batches are two left-padded rows whose widths are not multiples of sp; the tiny
models have 4 heads and 2 kv heads, so sp=4 also covers kv-head replication.
Log-probs must agree to 1e-5 and gradients (summed over the SP group) to rtol 1e-4.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from .dist_launch import run_workers
from .sp_fixtures import (
    EOS,
    PAD,
    VIDEO,
    VISION_END,
    VISION_START,
    assert_grads_match,
    left_padded,
    next_token_log_probs,
    random_rows,
    tiny_qwen2,
    tiny_qwen2_5_vl,
)

pytestmark = pytest.mark.dist


def _init(sp: int):
    from longrl.parallel.mesh import init_parallel

    return init_parallel(sp=sp, timeout=timedelta(seconds=30))


def _engine(model):
    from longrl.rollout.engine import TorchRolloutEngine

    return TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))


def _sampling(n: int = 3):
    from longrl.rollout.sampling import SamplingParams

    # Many stop ids: rows finish at different steps, so decoding drops rows from the cache.
    return SamplingParams(n=n, max_new_tokens=7, seed=5, stop_token_ids=tuple(range(2, 24)))


def _assert_same_rollout(expected, got) -> None:
    assert torch.equal(got.response_ids, expected.response_ids)
    assert torch.equal(got.response_mask, expected.response_mask)
    torch.testing.assert_close(got.log_probs, expected.log_probs, atol=1e-5, rtol=0)


def _check_log_probs_and_grads(reference, parallel, group, compute) -> None:
    """`compute(model) -> log-probs`; both models' weighted log-prob sums are backpropagated."""
    results = []
    for model in (reference, parallel):
        log_probs = compute(model)
        weights = torch.linspace(-1.0, 1.0, log_probs.numel()).view_as(log_probs)
        (log_probs * weights).sum().backward()
        results.append(log_probs)
    assert results[0].abs().sum() > 0
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=0)
    assert assert_grads_match(reference, parallel, group) > 10
    for model in (reference, parallel):
        model.zero_grad(set_to_none=True)


def _qwen2_full_forward(sp: int) -> None:
    from longrl.parallel.sequence_layout import SequenceLayout
    from longrl.parallel.sp_model import SequenceParallelLM
    from longrl.parallel.ulysses import ATTENTION_NAME
    from longrl.rollout.engine import text_position_ids

    ctx = _init(sp)
    reference = tiny_qwen2()
    parallel = SequenceParallelLM(tiny_qwen2(), ctx.sp_group)
    assert parallel.model.config._attn_implementation == ATTENTION_NAME
    # Two left-padded rows take the masked path; one unpadded row the causal fast path.
    for lengths, masked in (([11, 6], True), ([13], False)):
        ids, mask = left_padded(random_rows(lengths))
        positions = text_position_ids(mask)
        layout = SequenceLayout(sp).appended(ids.shape[1])
        assert (parallel._sharded_call(layout, mask, pad=1).mask is not None) == masked

        def compute(model, ids=ids, mask=mask, positions=positions):
            caller = parallel if model is parallel.model else model
            logits = caller(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            return next_token_log_probs(logits, ids, mask)

        _check_log_probs_and_grads(reference, parallel.model, ctx.sp_group, compute)


def _incremental_calls(reference, parallel, ids, mask) -> None:
    """Prefill, decode steps, a multi-token chunk, a decode step: each call's logits agree.

    Without gradients, calls narrower than sp run replicated and the others sharded,
    so this mixes both kinds of call in one cache.
    """
    from longrl.rollout.engine import text_position_ids

    positions = text_position_ids(mask)
    next_pos = positions.max(dim=-1).values + 1
    caches = {}
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for step, width in enumerate((ids.shape[1], 1, 1, 5, 1)):
            if step == 0:
                new_ids, new_pos, full_mask = ids, positions, mask
            else:
                new_ids = torch.randint(2, 90, (ids.shape[0], width), generator=gen)
                new_pos = next_pos[:, None] + torch.arange(width)
                next_pos = next_pos + width
                full_mask = torch.cat([full_mask, torch.ones_like(new_ids)], dim=1)
            logits = []
            for model in (reference, parallel):
                out = model(
                    input_ids=new_ids,
                    attention_mask=full_mask,
                    position_ids=new_pos,
                    past_key_values=caches.get(id(model)),
                    use_cache=True,
                )
                caches[id(model)] = out.past_key_values
                logits.append(out.logits)
            real = full_mask[:, -width:].bool()
            torch.testing.assert_close(logits[1][real], logits[0][real], atol=1e-5, rtol=0)


def _qwen2_with_cache(sp: int) -> None:
    from longrl.parallel.sp_model import SequenceParallelLM
    from longrl.rollout.engine import PromptBatch
    from longrl.train.logprobs import response_log_probs

    ctx = _init(sp)
    ids, mask = left_padded(random_rows([9, 5]))
    prompts = PromptBatch(attention_mask=mask, input_ids=ids)
    reference = tiny_qwen2()
    parallel = SequenceParallelLM(tiny_qwen2(), ctx.sp_group)
    with torch.no_grad():
        expected = _engine(reference.eval()).generate(prompts, _sampling())
        got = _engine(parallel.eval()).generate(prompts, _sampling())
    _assert_same_rollout(expected, got)
    assert 0 < int(expected.finished.sum()) < len(expected.finished)
    _incremental_calls(reference, parallel, ids, mask)
    reference.train(), parallel.train()
    for share_prefix in (True, False):

        def compute(model, share_prefix=share_prefix):
            model = parallel if model is parallel.model else model
            return response_log_probs(
                model,
                prompts,
                expected.response_ids,
                expected.response_mask,
                n=3,
                share_prefix=share_prefix,
            ).log_probs

        _check_log_probs_and_grads(reference, parallel.model, ctx.sp_group, compute)


def _video_prompt():
    """Row 0: text, a 4x4x4 video (16 tokens, 3-D positions), text = 23 tokens; row 1: 7 tokens."""
    from longrl.models.rope import mrope_position_ids

    rows = [[5, 6, VISION_START, *[VIDEO] * 16, VISION_END, 7, 8, 9], list(range(10, 17))]
    ids, mask = left_padded(rows)
    positions, _ = mrope_position_ids(
        ids,
        mask,
        video_grid_thw=torch.tensor([[4, 4, 4]]),
        second_per_grid_ts=[2.0],
        video_token_id=VIDEO,
        image_token_id=93,
        vision_start_token_id=VISION_START,
    )
    # Temporal positions outrun spatial ones: the three axes really differ.
    assert not torch.equal(positions[0], positions[1])
    video = torch.randn(16, 64, generator=torch.Generator().manual_seed(7))
    return ids, mask, positions, video


def _embed(model, ids, video):
    embeds = model.get_input_embeddings()(ids)
    return embeds.masked_scatter((ids == VIDEO)[..., None], video)


def _qwen2_5_vl_language_model(sp: int) -> None:
    from longrl.parallel.sp_model import SequenceParallelLM
    from longrl.rollout.engine import PromptBatch
    from longrl.train.logprobs import response_log_probs

    ctx = _init(sp)
    ids, mask, positions, video = _video_prompt()
    reference = tiny_qwen2_5_vl()
    parallel = SequenceParallelLM(tiny_qwen2_5_vl(), ctx.sp_group)
    assert parallel.model.config.vision_config._attn_implementation != "longrl_ulysses"
    videos = {id(reference): video.clone().requires_grad_(), id(parallel.model): video.clone()}
    videos[id(parallel.model)].requires_grad_()

    def full_forward(model):
        embeds = _embed(model, ids, videos[id(model)])
        caller = parallel if model is parallel.model else model
        out = caller(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        return next_token_log_probs(out.logits, ids, mask)

    _check_log_probs_and_grads(reference, parallel.model, ctx.sp_group, full_forward)
    video_grad = videos[id(parallel.model)].grad.clone()
    torch.distributed.all_reduce(video_grad, group=ctx.sp_group)
    torch.testing.assert_close(video_grad, videos[id(reference)].grad, rtol=1e-4, atol=1e-6)

    with torch.no_grad():
        prompts = PromptBatch(
            mask, inputs_embeds=_embed(reference, ids, video), position_ids=positions
        )
        expected = _engine(reference.eval()).generate(prompts, _sampling(n=2))
        got = _engine(parallel.eval()).generate(prompts, _sampling(n=2))
    _assert_same_rollout(expected, got)
    reference.train(), parallel.train()

    def prefix_shared(model):
        caller = parallel if model is parallel.model else model
        prompts = PromptBatch(mask, inputs_embeds=_embed(model, ids, video), position_ids=positions)
        return response_log_probs(
            caller, prompts, expected.response_ids, expected.response_mask, n=2
        ).log_probs

    _check_log_probs_and_grads(reference, parallel.model, ctx.sp_group, prefix_shared)


@pytest.mark.parametrize("sp", [2, 4])
def test_qwen2_full_forward_log_probs_and_grads_match_one_process(sp):
    run_workers(_qwen2_full_forward, sp, sp)


@pytest.mark.parametrize("sp", [2, 4])
def test_qwen2_kv_cache_rollout_and_prefix_shared_log_probs_match_one_process(sp):
    run_workers(_qwen2_with_cache, sp, sp)


@pytest.mark.parametrize("sp", [2, 4])
def test_qwen2_5_vl_language_model_with_3d_positions_matches_one_process(sp):
    run_workers(_qwen2_5_vl_language_model, sp, sp)
