"""Tiny models and left-padded batches shared by the sequence-parallel tests."""

from __future__ import annotations

import torch

from ..tiny_lm import EOS, PAD, TEXT_SIZES
from ..tiny_lm import tiny_qwen2 as shared_tiny_qwen2

VIDEO, VISION_START, VISION_END, IMAGE = 90, 91, 92, 93


def tiny_qwen2(seed: int = 0, heads: int = 4, kv_heads: int = 2):
    """The shared tiny Qwen2 with 16 dims per head and an untied head."""
    return shared_tiny_qwen2(
        seed,
        hidden_size=16 * heads,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )


def tiny_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL with a 2-layer, 4-head (2 kv heads) language model and M-RoPE [2, 3, 3]."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            **TEXT_SIZES,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
            "pad_token_id": PAD,
            "eos_token_id": EOS,
            "bos_token_id": EOS,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
        },
        video_token_id=VIDEO,
        image_token_id=IMAGE,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row)
        mask[b, width - len(row) :] = 1
    return ids, mask


def random_rows(lengths, seed: int = 4) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 90, (n,), generator=gen).tolist() for n in lengths]


def next_token_log_probs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """log p(ids[t+1] | ids[:t+1]) where both tokens are real, else 0: [B, L-1]."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return picked * (mask[:, 1:] * mask[:, :-1])


def assert_grads_match(reference: torch.nn.Module, parallel: torch.nn.Module, group) -> int:
    """SP gradients summed over the group equal the single-process ones, parameter by parameter."""
    from longrl.parallel.sequence import sum_gradients

    sum_gradients(parallel, group)
    checked = 0
    pairs = zip(reference.named_parameters(), parallel.parameters(), strict=True)
    for (name, ref), par in pairs:
        if ref.grad is None:
            assert par.grad is None or not par.grad.any(), name
            continue
        torch.testing.assert_close(
            par.grad, ref.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
        checked += 1
    return checked
