"""A tiny randomly initialised Qwen2 language model for rollout and log-prob tests."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB, PAD, EOS = 96, 0, 1
# The language model's sizes, shared with the tiny Qwen2.5-VL of the SP tests.
TEXT_SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def tiny_qwen2(seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    """Hidden 64, 2 layers, 4 heads / 2 KV heads; `overrides` go to the config."""
    torch.manual_seed(seed)
    settings = {
        **TEXT_SIZES,
        "max_position_embeddings": 512,
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        "tie_word_embeddings": True,
        **overrides,
    }
    return Qwen2ForCausalLM(Qwen2Config(**settings))


def random_left_padded(lengths, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random token ids (never PAD or EOS) and their attention mask."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = torch.randint(2, VOCAB, (length,), generator=gen)
        mask[row, width - length :] = 1
    return ids, mask
