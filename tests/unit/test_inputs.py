"""The one input builder against transformers' own path, on the tiny Qwen2.5-VL kit.

Two videos of different lengths (4 and 8 frames, 56x56), left padding, fp32.
"""

import pytest
import torch

from longrl.data.sample import Sample
from longrl.models.inputs import (
    ModelInputError,
    VideoClip,
    append_responses,
    build_prompt_batch,
    forward_logits,
    render_prompt,
)

# Measured on this machine: 0 (identical kernels, same order of operations).
TOL = 1e-5


@pytest.fixture(scope="module")
def kit():
    from longrl.models.processor import build_processor
    from longrl.models.tiny import TINY_VISION_PREPROCESS, build_tiny_model, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    processor = build_processor(tokenizer, TINY_VISION_PREPROCESS)
    model = build_tiny_model("qwen2_5_vl", tokenizer, seed=0)
    return model, processor


def samples():
    question = "<video>\nWhich color comes first?\nA. red\nB. blue"
    return [
        Sample(problem_id="a", prompt=question, answer="B", videos=("a.mp4",)),
        Sample(
            problem_id="b",
            prompt="Look: <video> How many scenes?",
            answer="3",
            videos=("b.mp4",),
            problem_type="numerical",
        ),
    ]


def clips():
    gen = torch.Generator().manual_seed(0)
    short = torch.randint(0, 256, (4, 56, 56, 3), dtype=torch.uint8, generator=gen)
    long = torch.randint(0, 256, (8, 56, 56, 3), dtype=torch.uint8, generator=gen)
    # 2 fps -> 1 s per temporal patch; 1 fps -> 2 s: temporal positions outrun spatial ones.
    return [[VideoClip(short, fps=2.0)], [VideoClip(long, fps=1.0)]]


def official_batch(processor, texts, videos):
    """What transformers' processor gives for the same texts and frames (left padded)."""
    flat = [c for row in videos for c in row]
    return processor(
        text=texts,
        videos=[c.frames for c in flat],
        video_metadata=[{"fps": c.fps, "total_num_frames": len(c.frames)} for c in flat],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )


def max_diff_on_real_tokens(a, b, mask):
    keep = mask.bool()
    return (a[keep] - b[keep]).abs().max().item()


@pytest.fixture(scope="module")
def built(kit):
    model, processor = kit
    mi = build_prompt_batch(samples(), clips(), processor, model.config, thinking=True)
    texts = [render_prompt(s, processor, thinking=True) for s in samples()]
    return mi, official_batch(processor, texts, clips())


def test_builder_reproduces_the_processor_tokens(built):
    mi, official = built
    assert torch.equal(mi.input_ids, official["input_ids"])
    assert torch.equal(mi.attention_mask, official["attention_mask"])
    assert torch.equal(mi.pixel_values_videos, official["pixel_values_videos"])
    assert mi.video_grid_thw.tolist() == [[2, 4, 4], [4, 4, 4]]
    assert mi.second_per_grid_ts.tolist() == [1.0, 2.0]
    assert mi.prompt_lengths.tolist() == official["attention_mask"].sum(-1).tolist()
    # Row 0 is the shorter one: left padded.
    assert mi.attention_mask[0, 0].item() == 0 and mi.attention_mask[:, -1].tolist() == [1, 1]


def test_scattered_embeddings_match_the_plain_forward_with_the_same_positions(kit, built):
    model, _ = kit
    mi, official = built
    with torch.no_grad():
        ours = forward_logits(model, mi)
        plain = model(
            input_ids=official["input_ids"],
            attention_mask=official["attention_mask"],
            pixel_values_videos=official["pixel_values_videos"],
            video_grid_thw=official["video_grid_thw"],
            second_per_grid_ts=official["second_per_grid_ts"],
            position_ids=mi.position_ids,
        ).logits
    diff = max_diff_on_real_tokens(ours, plain, mi.attention_mask)
    print(f"max |logit diff| builder vs plain forward, same positions: {diff:.3g}")
    assert diff <= TOL


def test_without_explicit_positions_transformers_silently_differs(kit, built):
    # The trap: the plain call computes 3-D positions by transformers 5.x's rule,
    # which resumes text after a video at start + max(h, w)/2 instead of after the
    # largest video position; every token after the long video moves.
    model, _ = kit
    mi, official = built
    with torch.no_grad():
        ours = forward_logits(model, mi)
        default = model(**official).logits
        hf_pos, _ = model.model.get_rope_index(
            official["input_ids"],
            official["mm_token_type_ids"],
            video_grid_thw=official["video_grid_thw"],
            second_per_grid_ts=official["second_per_grid_ts"],
            attention_mask=official["attention_mask"],
        )
    keep = mi.attention_mask.bool()
    assert not torch.equal(hf_pos[:, keep], mi.position_ids[:, keep])
    diff = max_diff_on_real_tokens(ours, default, mi.attention_mask)
    print(f"max |logit diff| builder vs transformers' default positions: {diff:.3g}")
    assert diff > 1e-3
    # Up to the end of each video the two agree: the difference is the continuation.
    last_video = [int(torch.nonzero(r == model.config.video_token_id).max()) for r in mi.input_ids]
    for b, end in enumerate(last_video):
        upto = keep[b, : end + 1]
        assert torch.equal(
            hf_pos[:, b, : end + 1][:, upto], mi.position_ids[:, b, : end + 1][:, upto]
        )


def test_appended_replies_match_a_single_full_sequence_build(kit, built):
    model, processor = kit
    mi, _ = built
    reply_texts = ["<think>red first</think><answer>A</answer><|im_end|>", "<answer>3</answer>"]
    replies = [processor.tokenizer.encode(t, add_special_tokens=False) for t in reply_texts]
    appended = append_responses(mi, replies)
    texts = [render_prompt(s, processor, thinking=True) for s in samples()]
    with torch.no_grad():
        got = forward_logits(model, appended)
        for b, (text, reply) in enumerate(zip(texts, reply_texts, strict=True)):
            full = build_prompt_batch(
                [text + reply], [clips()[b]], processor, model.config, thinking=True
            )
            n = len(replies[b])
            assert full.input_ids[0, -n:].tolist() == replies[b]
            cols = slice(appended.prompt_width, appended.prompt_width + n)
            assert torch.equal(appended.position_ids[:, b, cols], full.position_ids[:, 0, -n:])
            want = forward_logits(model, full)[0, -n - 1 :]
            have = got[b, appended.prompt_width - 1 : appended.prompt_width + n]
            diff = (have - want).abs().max().item()
            print(f"row {b}: max |logit diff| appended vs full build: {diff:.3g}")
            assert diff <= TOL


def test_an_image_and_a_video_in_one_batch_match_the_plain_forward(kit):
    model, processor = kit
    gen = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (56, 84, 3), dtype=torch.uint8, generator=gen)
    prompts = [
        Sample(problem_id="i", prompt="<image> What shape?", answer="A", images=("x.png",)),
        samples()[1],
    ]
    mi = build_prompt_batch(
        prompts, [[], clips()[1]], processor, model.config, thinking=False, images=[[image], []]
    )
    assert mi.image_grid_thw.tolist() == [[1, 4, 6]] and mi.image_rows == ((0,), ())
    assert mi.video_rows == ((), (0,))
    with torch.no_grad():
        ours = forward_logits(model, mi)
        plain = model(
            input_ids=mi.input_ids,
            attention_mask=mi.attention_mask,
            pixel_values=mi.pixel_values,
            image_grid_thw=mi.image_grid_thw,
            pixel_values_videos=mi.pixel_values_videos,
            video_grid_thw=mi.video_grid_thw,
            second_per_grid_ts=mi.second_per_grid_ts,
            position_ids=mi.position_ids,
        ).logits
    assert max_diff_on_real_tokens(ours, plain, mi.attention_mask) <= TOL


def test_video_count_must_match_the_placeholders(kit):
    model, processor = kit
    with pytest.raises(ModelInputError, match=r"^b: the rendered prompt has 1 <\|video_pad\|>"):
        build_prompt_batch(
            samples(), [clips()[0], clips()[1] * 2], processor, model.config, thinking=False
        )
