import pytest
import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine, next_positions
from longrl.rollout.sampling import SamplingParams, choose_tokens, truncate_logits

from ..tiny_lm import EOS, PAD, VOCAB, random_left_padded, tiny_qwen2


@pytest.fixture(scope="module")
def model():
    return tiny_qwen2().eval()


def _prompts(lengths=(7, 4)):
    return random_left_padded(lengths, seed=1)


def _teacher_forced_log_probs(model, ids, mask, response, response_mask, temperature=1.0):
    """Naive reference: one full forward over prompt + response per row."""
    full = torch.cat([ids, response], dim=1)
    full_mask = torch.cat([mask, response_mask], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=full, attention_mask=full_mask, position_ids=positions).logits
    scale = temperature if temperature > 0 else 1.0
    log_probs = torch.log_softmax(logits[:, ids.shape[1] - 1 : -1].float() / scale, -1)
    return log_probs.gather(-1, response[..., None]).squeeze(-1) * response_mask


def test_greedy_equals_transformers_generate(model):
    ids, mask = _prompts()
    engine = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))
    ours = engine.generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(n=1, temperature=0, max_new_tokens=12),
    )
    reference = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )[:, ids.shape[1] :]
    width = ours.response_ids.shape[1]
    assert torch.equal(ours.response_ids, reference[:, :width])
    assert ours.response_mask.sum() > 0


def test_shared_prefix_equals_independent_prefills(model):
    ids, mask = _prompts()
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=123)
    batch = PromptBatch(attention_mask=mask, input_ids=ids)
    shared = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        batch, params
    )
    naive = TorchRolloutEngine(
        model, pad_token_id=PAD, eos_token_ids=(EOS,), share_prefix=False
    ).generate(batch, params)
    assert torch.equal(shared.response_ids, naive.response_ids)
    assert torch.equal(shared.response_mask, naive.response_mask)
    torch.testing.assert_close(shared.log_probs, naive.log_probs, atol=1e-5, rtol=0)
    # And both equal a teacher-forced full forward per sample.
    reference = _teacher_forced_log_probs(
        model,
        ids.repeat_interleave(4, 0),
        mask.repeat_interleave(4, 0),
        shared.response_ids,
        shared.response_mask,
    )
    torch.testing.assert_close(shared.log_probs, reference, atol=1e-5, rtol=0)
    assert shared.prompt_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_seed_reproduces_and_changes_samples(model):
    ids, mask = _prompts()
    engine = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))
    batch = PromptBatch(attention_mask=mask, input_ids=ids)
    first = engine.generate(batch, SamplingParams(n=3, max_new_tokens=8, seed=7))
    again = engine.generate(batch, SamplingParams(n=3, max_new_tokens=8, seed=7))
    other = engine.generate(batch, SamplingParams(n=3, max_new_tokens=8, seed=8))
    assert torch.equal(first.response_ids, again.response_ids)
    assert not torch.equal(first.response_ids, other.response_ids)
    # The n samples of one group differ from each other (sampling, not copies).
    assert len({tuple(row.tolist()) for row in first.response_ids[:3]}) > 1


def test_tempered_log_probs_match_teacher_forcing(model):
    ids, mask = _prompts((5, 5))
    engine = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))
    out = engine.generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(n=2, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=6, seed=3),
    )
    reference = _teacher_forced_log_probs(
        model,
        ids.repeat_interleave(2, 0),
        mask.repeat_interleave(2, 0),
        out.response_ids,
        out.response_mask,
        temperature=0.7,
    )
    torch.testing.assert_close(out.log_probs, reference, atol=1e-5, rtol=0)


def test_stop_tokens_end_responses_and_mask_the_rest(model):
    ids, mask = _prompts()
    engine = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))
    # Make every token a stop token except the first sampled one: responses are 1 token long.
    stop_all = tuple(range(VOCAB))
    out = engine.generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(n=2, max_new_tokens=5, stop_token_ids=stop_all, seed=0),
    )
    assert out.response_ids.shape == (4, 1)
    assert out.finished.all()
    assert out.lengths.tolist() == [1, 1, 1, 1]


def test_finished_rows_are_padded_and_unfinished_flagged(model):
    ids, mask = _prompts()
    engine = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,))
    params = SamplingParams(n=6, max_new_tokens=10, seed=11)
    greedy_first = engine.generate(PromptBatch(attention_mask=mask, input_ids=ids), params)
    # Choose as stop token a token that some (not all) rows emit mid-response.
    counts = torch.bincount(greedy_first.response_ids[:, 2], minlength=VOCAB)
    stop = int(counts.argmax())
    out = engine.generate(
        PromptBatch(attention_mask=mask, input_ids=ids),
        SamplingParams(n=6, max_new_tokens=10, seed=11, stop_token_ids=(stop,)),
    )
    for row in range(out.response_ids.shape[0]):
        length = int(out.lengths[row])
        assert (out.response_mask[row, :length] == 1).all()
        assert (out.response_mask[row, length:] == 0).all()
        assert (out.response_ids[row, length:] == PAD).all()
        assert (out.log_probs[row, length:] == 0).all()
        assert bool(out.finished[row]) == (out.response_ids[row, length - 1].item() in (stop, EOS))
    assert out.finished.any()
    # Dropping finished rows from the cache must not change the others' tokens.
    assert torch.equal(out.response_ids[:, :2], greedy_first.response_ids[:, :2])


def test_three_d_positions_with_equal_axes_match_one_d(model):
    # Qwen2 applies rotary on 1-D positions; an M-RoPE model whose three axes
    # are equal must continue on all three axes at max + 1. Checked via next_positions.
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    one_d = torch.tensor([[1, 0, 1, 2], [0, 1, 2, 3]])
    three_d = torch.stack([one_d, one_d, one_d])
    three_d[1, 0, 3] = 9  # a video-like block can have a larger spatial position
    assert next_positions(one_d, mask).tolist() == [3, 4]
    assert next_positions(three_d, mask).tolist() == [10, 4]


def test_truncation_hand_computed():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = truncate_logits(log_probs, top_k=2, top_p=1.0)
    assert torch.isinf(top2[0, 2:]).all() and torch.isfinite(top2[0, :2]).all()
    # top_p=0.8: 0.5 (mass before 0) and 0.3 (mass before 0.5 < 0.8) stay; 0.15 (before 0.8) goes.
    nucleus = truncate_logits(log_probs, top_k=-1, top_p=0.8)
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    nucleus = truncate_logits(log_probs, top_k=-1, top_p=0.81)
    assert torch.isfinite(nucleus[0, :3]).all() and torch.isinf(nucleus[0, 3])
    # top_k=1 is greedy whatever the seed.
    params = SamplingParams(top_k=1)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        assert choose_tokens(log_probs, params, gen).item() == 0


def test_sampling_params_validated():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)


def test_right_padded_prompts_refused(model):
    with pytest.raises(ValueError, match="left-padded"):
        PromptBatch(attention_mask=torch.tensor([[1, 1, 0]]), input_ids=torch.tensor([[3, 4, 0]]))
