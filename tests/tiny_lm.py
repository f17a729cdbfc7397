"""A tiny randomly initialised Qwen2 language model for rollout and log-prob tests."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB, PAD, EOS = 96, 0, 1


def tiny_qwen2(seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    """Hidden 64, 2 layers, 4 heads / 2 KV heads; `overrides` go to the config."""
    torch.manual_seed(seed)
    settings = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        "tie_word_embeddings": True,
        **overrides,
    }
    return Qwen2ForCausalLM(Qwen2Config(**settings))
