"""extract_choice: a table of hand-written cases (shared with the evaluator)."""

import pytest

from longrl.rewards.answer import extract_choice, gold_choice, normalize_text, parse_options

COLORS = ["A. blue", "B. red", "C. green", "D. red and green"]
PLAIN = ["blue", "red", "green"]

CASES = [
    # --- answer tags ---
    ("<answer>B</answer>", None, "B"),
    ("<answer> (B) </answer>", None, "B"),
    ("<answer>b</answer>", None, "B"),
    ("<answer>[C]</answer>", None, "C"),
    ("<answer>B.</answer>", None, "B"),
    ("<answer>Option B</answer>", COLORS, "B"),
    ("<ANSWER>B</ANSWER>", None, "B"),
    ("<think>red is the colour</think>\n<answer>B. red</answer>", COLORS, "B"),
    ("<answer>(B) red</answer>", COLORS, "B"),
    ("<answer>B) red</answer>", COLORS, "B"),
    ("<answer>B. green</answer>", COLORS, None),  # label contradicts the text
    ("<answer>red</answer>", COLORS, "B"),  # option text
    ("<answer>  Red. </answer>", COLORS, "B"),
    ("<answer>red and green</answer>", COLORS, "D"),
    ("<answer>The car is red</answer>", COLORS, "B"),  # one option inside a longer answer
    ("<answer>It is red and green</answer>", COLORS, "D"),  # D contains B and C
    ("<answer>blue or green</answer>", COLORS, None),  # two options: ambiguous
    ("<answer>blue</answer>", PLAIN, "A"),  # letters by position
    ("<answer>The answer is (C)</answer>", COLORS, "C"),
    ("<answer>A</answer> wait <answer>C</answer>", COLORS, "C"),  # last tag wins
    ("<think>hmm <answer>A</answer></think><answer>C</answer>", COLORS, "C"),
    ("<answer>A</answer> then <answer>C", COLORS, "C"),  # unclosed final tag (cut output)
    ("<answer>B", COLORS, "B"),
    ("<answer>A or B</answer>", COLORS, None),
    ("<answer>A, B</answer>", COLORS, None),
    ("<answer>E</answer>", COLORS, None),  # not an option letter
    ("<answer></answer>", COLORS, None),
    ("<answer>purple</answer>", COLORS, None),
    # --- free text ---
    ("B", None, "B"),
    ("B.", None, "B"),
    ("(B)", None, "B"),
    ("  b  ", None, "B"),
    ("The answer is (B)", None, "B"),
    ("the answer is (b).", None, "B"),
    ("Answer: B", None, "B"),
    ("answer: b.", None, "B"),
    ("**Answer:** (D)", COLORS, "D"),
    ("Final answer: C", COLORS, "C"),
    ("The correct answer is option C, green.", COLORS, "C"),
    ("The answer is B because it is red.", COLORS, "B"),
    ("The answer is red.", COLORS, "B"),
    ("\\boxed{C}", COLORS, "C"),
    ("First I thought the answer is A. Re-checking, the answer is D.", COLORS, "D"),
    ("B. red", COLORS, "B"),
    ("red", COLORS, "B"),
    ("<think>the answer is A</think> Answer: C", COLORS, "C"),  # after </think> only
    ("<think>the answer is A</think>", COLORS, None),  # nothing after thinking
    ("the answer is a dog", None, None),  # article, not a choice
    ("A video shows a red car.", COLORS, None),
    ("I think so", None, None),
    ("", None, None),
    ("Answer: E", COLORS, None),
]


@pytest.mark.parametrize(("text", "options", "expected"), CASES)
def test_extract_choice_table(text, options, expected):
    assert extract_choice(text, options) == expected


def test_parse_options_formats():
    assert parse_options(["A. blue", "B. red"]) == [("A", "blue"), ("B", "red")]
    assert parse_options(["(A) blue", "(B) red"]) == [("A", "blue"), ("B", "red")]
    assert parse_options(["blue", "red"]) == [("A", "blue"), ("B", "red")]
    assert parse_options("A. blue\nB. red\n") == [("A", "blue"), ("B", "red")]
    # labels that are not distinct fall back to position, stripping only matching labels
    assert parse_options(["A. Lincoln", "Washington"]) == [("A", "Lincoln"), ("B", "Washington")]
    assert parse_options(None) == []


def test_normalize_text():
    assert normalize_text("  **Red**  Car. ") == "red car"


def test_gold_choice_accepts_dataset_forms_and_rejects_non_choices():
    assert gold_choice("B", COLORS) == "B"
    assert gold_choice("<answer>B</answer>", COLORS) == "B"
    assert gold_choice("(C)", COLORS) == "C"
    assert gold_choice("green", COLORS) == "C"
    with pytest.raises(ValueError, match="ground-truth answer '42' is not one of the choices"):
        gold_choice("42", COLORS)
