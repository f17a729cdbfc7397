"""The offline tiny-model kit: a seeded tiny Qwen2.5-VL (or Qwen2) checkpoint directory.

No model hub is needed: the tokenizer is a byte-level BPE trained here on a small
generated English+digits corpus (questions about colours, shapes, order and
timestamps, and the answer-format instructions), with the Qwen special tokens
appended after the BPE vocabulary as in the real Qwen tokenizers. The tokenizer
uses Qwen2's exact pre-tokenisation (NFC, Qwen's split regex, byte level), so it
is saved as an ordinary `Qwen2Tokenizer` and reloads identically.

`<think>`, `</think>`, `<answer>`, `</answer>` are added as normal (non-special)
tokens: each is one id, survives `skip_special_tokens=True` decoding, and makes
the reply format easy for a tiny model to learn. (Real Qwen checkpoints split
them into several tokens; nothing in longrl relies on them being single ids.)

The checkpoint directory is what a real one looks like (config.json,
generation_config.json, model.safetensors, tokenizer files, chat_template.jinja,
preprocessor_config.json, video_preprocessor_config.json, processor_config.json)
and is loaded by `longrl.models.load` exactly like /models/Qwen2.5-VL-3B-Instruct.
Same seed and sizes -> byte-identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from longrl.models.preprocess import VisionPreprocessConfig

# Qwen special tokens, in the order the real Qwen2.5-VL tokenizer numbers them
# (after the BPE vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
REPLY_TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# Qwen2's pre-tokenisation regex (the tokenizer format spec; Qwen2Tokenizer rebuilds
# its pipeline with it on load, so training must use the same one).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Small enough for a ~1 s CPU forward on a long prompt; preprocessing tuned for tiny frames.
TINY_VISION_PREPROCESS = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=112 * 112)

_COLORS = [
    "red",
    "green",
    "blue",
    "yellow",
    "magenta",
    "cyan",
    "white",
    "black",
    "orange",
    "purple",
    "pink",
    "brown",
    "gray",
    "grey",
]
_SHAPES = [
    "circle",
    "square",
    "triangle",
    "star",
    "rectangle",
    "hexagon",
    "diamond",
    "ellipse",
    "pentagon",
    "heart",
]
_ORDER = [
    "first",
    "second",
    "third",
    "fourth",
    "last",
    "next",
    "before",
    "after",
    "earliest",
    "latest",
    "then",
    "finally",
]
_FIXED_TEXT = (
    "You are a helpful assistant.",
    "First reason step by step about the question and the video inside <think></think> tags. "
    "Then give the letter of the correct option inside <answer></answer> tags, "
    "e.g. <think> ... </think><answer>B</answer>.",
    "Give the letter of the correct option inside <answer></answer> tags and nothing else, "
    "e.g. <answer>B</answer>.",
    "Give a number inside <answer></answer> tags. Give a short phrase inside <answer></answer> tags.",
    "Which color fills the screen at the start of the video? At the end of the video?",
    "How many different colors appear in the video? How many separate scenes are in the video?",
    "Which of these colors appears earliest in the video? Which color is on screen for the "
    "longest total time? In total: Therefore the answer is A. B. C. D.",
    "Describe the video. What happens? Where is the object? Is it moving left, right, up or down?",
)


def tiny_corpus(num_sentences: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic English+digits text about colours, shapes, order and timestamps."""
    rng = random.Random(seed)

    def time() -> str:
        return rng.choice(
            [
                f"{rng.uniform(0, 600):.1f}s",
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
                f"{rng.randint(1, 120)} seconds",
                f"{rng.randint(1, 90)} minutes",
            ]
        )

    templates = (
        lambda: f"Which color comes right after the {rng.choice(_COLORS)} scene?",
        lambda: f"Which color comes right before the {rng.choice(_COLORS)} scene?",
        lambda: f"How many separate {rng.choice(_COLORS)} scenes are in the video?",
        lambda: f"The {rng.choice(_ORDER)} scene is {rng.choice(_COLORS)}.",
        lambda: f"A {rng.choice(_COLORS)} {rng.choice(_SHAPES)} appears at {time()}.",
        lambda: f"The {rng.choice(_SHAPES)} moves from {time()} to {time()}.",
        lambda: (
            f"{time()}-{time()} {rng.choice(_COLORS)}. {time()}-{time()} {rng.choice(_COLORS)}."
        ),
        lambda: f"After {rng.choice(_COLORS)} comes {rng.choice(_COLORS)}.",
        lambda: f"{rng.choice(_COLORS).capitalize()} appears in {rng.randint(0, 9)} scenes.",
        lambda: (
            f"First seen: {rng.choice(_COLORS)} at {time()}, {rng.choice(_COLORS)} at {time()}."
        ),
        lambda: (
            f"What shape is shown {rng.choice(_ORDER)}? {rng.choice('ABCD')}. {rng.choice(_SHAPES)}"
        ),
        lambda: (
            f"<think>The video shows a {rng.choice(_COLORS)} {rng.choice(_SHAPES)} "
            f"at {time()}.</think><answer>{rng.choice('ABCD')}</answer>"
        ),
        lambda: (
            f"Count: {rng.randint(0, 1000)}. Total {rng.randint(0, 100)} of {rng.randint(0, 100)}."
        ),
    )
    sentences = list(_FIXED_TEXT) * 20
    sentences += [rng.choice(templates)() for _ in range(num_sentences)]
    return sentences


def train_tiny_tokenizer(vocab_size: int = 512, seed: int = 0):
    """A `Qwen2Tokenizer`: byte-level BPE of `vocab_size` pieces + the Qwen special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(seed=seed), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    # Special tokens take the ids right after the BPE pieces, in Qwen's order.
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REPLY_TAG_TOKENS])
    from longrl.models.processor import QWEN_CHAT_TEMPLATE

    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _token_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def tiny_qwen2_5_vl_config(
    tokenizer,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    vision_num_heads: int = 2,
    vision_intermediate_size: int = 128,
    max_position_embeddings: int = 32768,
):
    """A Qwen2.5-VL config shaped like the real ones, shrunk.

    M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width)
    sections; the real 3B/7B use [16, 24, 24] of 64, kept here in the same 2:3:3 ratio.
    """
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden_size // num_attention_heads
    half = head_dim // 2
    if hidden_size % num_attention_heads or head_dim % 2 or half < 4:
        raise ValueError(
            f"hidden_size {hidden_size} / {num_attention_heads} heads gives no usable head_dim"
        )
    spatial = half * 3 // 8
    mrope_section = [half - 2 * spatial, spatial, spatial]
    ids = _token_ids(tokenizer)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": mrope_section,
        },
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
    }
    vision = {
        "depth": vision_depth,
        "hidden_size": vision_hidden_size,
        "intermediate_size": vision_intermediate_size,
        "num_heads": vision_num_heads,
        "out_hidden_size": hidden_size,
        "patch_size": TINY_VISION_PREPROCESS.patch_size,
        "spatial_merge_size": TINY_VISION_PREPROCESS.merge_size,
        "temporal_patch_size": TINY_VISION_PREPROCESS.temporal_patch_size,
        "window_size": 112,
        "fullatt_block_indexes": [vision_depth - 1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=True,
        dtype="float32",
    )


def tiny_qwen2_config(
    tokenizer,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    max_position_embeddings: int = 32768,
):
    """A text-only Qwen2 config of the same size (for text tasks and 1-D RoPE checks)."""
    from transformers import Qwen2Config

    ids = _token_ids(tokenizer)
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
        tie_word_embeddings=True,
        dtype="float32",
    )


_BUILDERS = {"qwen2_5_vl": tiny_qwen2_5_vl_config, "qwen2": tiny_qwen2_config}
_MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2": "Qwen2ForCausalLM",
}


def build_tiny_model(kind: str, tokenizer, seed: int = 0, **sizes: Any):
    """A freshly initialised tiny model; the same seed gives the same weights.

    The global RNG state is restored afterwards, so building does not disturb callers.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {sorted(_BUILDERS)}")
    import transformers

    config = _BUILDERS[kind](tokenizer, **sizes)
    model_class = getattr(transformers, _MODEL_CLASSES[kind])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class._from_config(config, dtype=torch.float32)
    return model.eval()


def build_tiny_checkpoint(
    out_dir: str | Path, kind: str = "qwen2_5_vl", seed: int = 0, **sizes: Any
) -> Path:
    """Write a tiny checkpoint directory (model + tokenizer + processor files); returns its path.

    `sizes` are the keyword arguments of `tiny_qwen2_5_vl_config` / `tiny_qwen2_config`
    (hidden_size, num_hidden_layers, ...), plus `vocab_size` of the BPE.
    """
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(vocab_size=sizes.pop("vocab_size", 512))
    model = build_tiny_model(kind, tokenizer, seed=seed, **sizes)
    ids = _token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"],
        pad_token_id=ids["pad_token_id"],
        # Stop at the end of the assistant turn, or at end-of-text.
        eos_token_id=[ids["eos_token_id"], ids["bos_token_id"]],
    )
    model.save_pretrained(out, safe_serialization=True)
    if kind == "qwen2":
        tokenizer.save_pretrained(out)
    else:
        from longrl.models.processor import build_processor

        processor = build_processor(tokenizer, TINY_VISION_PREPROCESS)
        processor.save_pretrained(out)
    return out


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
