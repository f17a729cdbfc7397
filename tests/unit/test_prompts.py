"""Thinking / non-thinking prompts and the chat messages built from a Sample."""

import pytest

from longrl.data.sample import Sample
from longrl.models.prompts import (
    answer_instruction,
    build_messages,
    format_reasoning_target,
)
from longrl.models.rope import ModelInputError


def sample(prompt, videos=("a.mp4",), **kw):
    return Sample(problem_id="p1", prompt=prompt, answer="B", videos=tuple(videos), **kw)


def test_non_thinking_asks_for_the_letter_in_answer_tags_only():
    text = answer_instruction(thinking=False)
    assert "<answer></answer>" in text and "<answer>B</answer>" in text
    assert "letter" in text
    assert "<think>" not in text


def test_thinking_asks_for_reasoning_then_answer():
    text = answer_instruction(thinking=True)
    assert "<think></think>" in text and "<answer></answer>" in text
    assert text.index("<think>") < text.index("<answer>")
    assert "letter" in text


def test_other_problem_types_do_not_ask_for_a_letter():
    assert "number" in answer_instruction(False, "numerical")
    assert "letter" not in answer_instruction(False, "numerical")
    assert "final answer" in answer_instruction(True, "something new")


def test_messages_put_videos_where_the_placeholders_are():
    s = sample(
        "Compare <video> and <video>. Which is longer?\nA. first\nB. second",
        videos=("one.mp4", "two.mp4"),
    )
    messages = build_messages(s, thinking=False)
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert [c["type"] for c in content] == ["text", "video", "text", "video", "text"]
    assert [c["video"] for c in content if c["type"] == "video"] == ["one.mp4", "two.mp4"]
    assert content[0]["text"] == "Compare"
    assert content[-1]["text"].startswith(". Which is longer?\nA. first\nB. second\n")
    assert content[-1]["text"].endswith(answer_instruction(False))


def test_leading_video_and_system_prompt():
    messages = build_messages(sample("<video>\nWhat happens?"), True, system_prompt="Be brief.")
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    content = messages[1]["content"]
    assert content[0] == {"type": "video", "video": "a.mp4"}
    assert content[1]["text"] == "What happens?\n" + answer_instruction(True)


def test_instruction_gets_its_own_part_after_a_trailing_video():
    content = build_messages(sample("Describe: <video>"), False)[0]["content"]
    assert [c["type"] for c in content] == ["text", "video", "text"]
    assert content[2]["text"] == answer_instruction(False)


def test_placeholder_count_must_match_the_videos():
    with pytest.raises(ModelInputError, match=r"data.jsonl:3: prompt has 1 <video>.*2 videos"):
        build_messages(
            sample("<video> hi", videos=("a.mp4", "b.mp4"), source="data.jsonl:3"), False
        )


def test_reasoning_target():
    assert format_reasoning_target(" look at frame 3 ", "B") == (
        "<think>look at frame 3</think><answer>B</answer>"
    )
    assert format_reasoning_target(None, "C") == "<answer>C</answer>"


@pytest.fixture(scope="module")
def processor():
    from longrl.models.processor import build_processor
    from longrl.models.tiny import TINY_VISION_PREPROCESS, train_tiny_tokenizer

    return build_processor(train_tiny_tokenizer(), TINY_VISION_PREPROCESS)


@pytest.mark.parametrize("thinking", [False, True])
def test_chat_template_renders_video_block_then_question_and_instruction(processor, thinking):
    from longrl.models.inputs import render_prompt

    s = sample("<video>\nWhich color comes first?\nA. red\nB. blue")
    text = render_prompt(s, processor, thinking=thinking)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "Which color comes first?\nA. red\nB. blue\n"
        f"{answer_instruction(thinking)}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ("<think></think>" in text) is thinking
    with_system = render_prompt(s, processor, thinking=thinking, system_prompt="Be brief.")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
