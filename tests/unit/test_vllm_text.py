"""vLLM backend vs the built-in engine on a text (1-D RoPE) model: token-id and embedding
prompts, before and after an in-place weight sync. Needs `longrl[vllm]` (`make install-vllm`)."""

import importlib.util

import pytest
import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vllm not installed (make install-vllm)"
    ),
]

PAD, EOS = 512, 514  # the tiny tokenizer's <|endoftext|> and <|im_end|>
LOG_PROB_TOL = 1e-4
LONG_PROMPT = 4500  # two of them exceed vLLM's default scheduler step (4096 tokens on CPU)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from longrl.models.load import load_model
    from longrl.models.tiny import build_tiny_checkpoint
    from longrl.rollout.vllm_engine import VllmRolloutEngine

    path = build_tiny_checkpoint(tmp_path_factory.mktemp("qwen2") / "model", kind="qwen2")
    model = load_model(path).eval()
    engine = VllmRolloutEngine(
        model,
        path,
        pad_token_id=PAD,
        eos_token_ids=(EOS, PAD),
        max_model_len=LONG_PROMPT + 64,
        work_dir=tmp_path_factory.mktemp("vllm"),
    )
    yield model, engine
    engine.close()


def _prompts(lengths=(12, 5, 9), seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = torch.randint(0, 500, (length,), generator=gen)
        mask[row, width - length :] = 1
    return ids, mask


def _same_rollout(ours, reference):
    assert torch.equal(ours.response_ids, reference.response_ids)
    assert torch.equal(ours.response_mask, reference.response_mask)
    assert torch.equal(ours.finished, reference.finished)
    diff = float((ours.log_probs - reference.log_probs).abs().max())
    assert diff < LOG_PROB_TOL
    return diff


def _stop_early(model, ids, mask):
    """(stop id, reply length): a token the greedy model emits mid-reply in row 0."""
    reply = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(temperature=0, max_new_tokens=10),
    )
    tokens = reply.response_ids[0].tolist()
    for i in range(1, len(tokens)):
        if tokens[i] not in tokens[:i]:
            return tokens[i], i + 1
    return tokens[0], 1


def test_greedy_equals_built_in_and_transformers_before_and_after_sync(setup):
    model, engine = setup
    ids, mask = _prompts()
    builtin = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS, PAD))
    for phase in ("initial weights", "after update"):
        stop, stop_length = _stop_early(model, ids, mask)
        params = SamplingParams(n=2, temperature=0, max_new_tokens=10, stop_token_ids=(stop,))
        by_ids = PromptBatch(attention_mask=mask, input_ids=ids)
        by_embeds = PromptBatch(
            attention_mask=mask, inputs_embeds=model.get_input_embeddings()(ids).detach()
        )
        ours = engine.generate(by_ids, params)
        reference = builtin.generate(by_ids, params)
        _same_rollout(ours, reference)
        _same_rollout(engine.generate(by_embeds, params), reference)
        assert ours.finished[0] and ours.response_mask[0].sum() == stop_length
        assert ours.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
        hf = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=[EOS, PAD, stop],
        )[:, ids.shape[1] :]
        for row in range(3):
            length = int(ours.response_mask[2 * row].sum())
            assert ours.response_ids[2 * row, :length].tolist() == hf[row, :length].tolist()
        if phase == "initial weights":
            before = ours.response_ids.clone()
            _train_one_step(model, ids, mask)
            with pytest.raises(RuntimeError, match="sync_weights"):
                engine.generate(by_ids, params)  # stale weights are refused, never used
            engine.sync_weights(model)
    assert not torch.equal(before, ours.response_ids)  # the update changed the replies


def _train_one_step(model, ids, mask):
    """A real optimizer step (AdamW) on a language-model loss, changing every weight."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
    )
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()


def test_sampled_log_probs_equal_teacher_forcing_and_seed_reproduces(setup):
    model, engine = setup
    ids, mask = _prompts(seed=1)
    batch = PromptBatch(attention_mask=mask, input_ids=ids)
    params = SamplingParams(n=4, temperature=0.7, max_new_tokens=8, seed=11)
    out = engine.generate(batch, params)
    with torch.no_grad():
        forced = response_log_probs(
            model, batch, out.response_ids, out.response_mask, n=4, temperature=0.7
        ).log_probs
    assert float(((out.log_probs - forced) * out.response_mask).abs().max()) < LOG_PROB_TOL
    again = engine.generate(batch, params)
    assert torch.equal(out.response_ids, again.response_ids)
    assert len({tuple(r.tolist()) for r in out.response_ids[:4]}) > 1  # samples, not copies


def test_refuses_what_would_differ_from_training(setup):
    _, engine = setup
    ids, mask = _prompts()
    shifted = (mask.cumsum(-1) - 1).clamp(min=0) + 3
    with pytest.raises(ValueError, match=r"not 0\.\."):
        engine.generate(
            PromptBatch(attention_mask=mask, input_ids=ids, position_ids=shifted),
            SamplingParams(temperature=0, max_new_tokens=4),
        )
    # Started for processed log-probs: truncated sampling at T != 1 has no matching mode.
    with pytest.raises(ValueError, match="differ from training"):
        engine.generate(
            PromptBatch(attention_mask=mask, input_ids=ids),
            SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=4),
        )


def test_seeded_sampling_of_prompts_longer_than_a_scheduler_step(setup):
    """vLLM on CPU crashed here with chunked prefill ("CPU Generator does not use offset")."""
    _, engine = setup
    ids, mask = _prompts(lengths=(LONG_PROMPT, LONG_PROMPT), seed=2)
    out = engine.generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(n=2, temperature=1.0, max_new_tokens=4, seed=3),
    )
    assert out.response_mask.sum() > 0
