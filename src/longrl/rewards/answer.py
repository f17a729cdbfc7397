"""Multiple-choice answer extraction, shared by the accuracy reward and the evaluator.

`extract_choice(text, options)` returns the chosen option letter ("A".."Z") or
None when the text gives no answer or an ambiguous one. Rules, in order:

1. Answer tags. If the text has `<answer>...</answer>`, only the LAST one
   counts (an unclosed final `<answer>` counts too: output cut at max tokens).
   Its content is read by `_choice_in_content`:
     a. just a letter: "B", "b", "(B)", "[B]", "B.", "B)", "Option B";
     b. a letter label then text: "B. red", "(B) red", "B) red", "B: red" — None
        if the text is exactly ANOTHER option's text (contradiction);
     c. an answer phrase: "the answer is (B)", "Answer: B", "\\boxed{B}" (last one);
     d. exactly one option's text ("red", "Red.", " red "), case/space-insensitive;
     e. exactly one option's text inside a longer answer ("The car is red"); when
        several options appear and one contains all the others it wins, else None.
2. No tags: only the part after the last `</think>` is read (None if that part
   is blank), as free text:
     a. the LAST answer phrase ("The answer is (B)", "Answer: B", "\\boxed{B}");
     b. the whole text is just a letter ("B", "(B)", "B.");
     c. a one-line text that starts with a letter label ("B. red");
     d. the whole text is exactly one option's text.
3. A letter must be one of the options' letters when options are given (else
   A–Z). Lower-case letters count only where they cannot be the article "a" or
   a word: alone, in parentheses, or followed by punctuation/end.

Options may be given as ["A. red", "B. blue"], ["(A) red", ...], ["red", "blue"]
(letters by position) or one newline-separated string.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

LETTERS = string.ascii_uppercase

_OPTION_LABEL = re.compile(
    r"^\s*(?:\(\s*([A-Z])\s*\)|\[\s*([A-Z])\s*\]|([A-Z])\s*[.:)．：、])\s*(.*)$", re.S
)
_ANSWER_TAG = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.I | re.S)
_OPEN_ANSWER_TAG = re.compile(r"<\s*answer\s*>", re.I)
_THINK_END = re.compile(r"<\s*/\s*think\s*>", re.I)
_BARE_LETTER = re.compile(r"(?:(?:option|choice)\s*)?[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:)]?", re.I)
_LEADING_LABEL = re.compile(
    r"(?:(?:option|choice)\s*)?(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Z])\s*[.:)])"
    r"\s*(\S.*)",
    re.S,
)
_ANSWER_PHRASE = re.compile(
    r"\banswer\b\s*(?:is\b\s*:?|[:：])\s*(?:\*\*\s*)?(?:(?:option|choice)\s+)?", re.I
)
_LETTER_AFTER_PHRASE = re.compile(
    r"\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Z])(?![A-Za-z0-9])"
    r"|([a-z])(?=\s*(?:[.,;:!?)*]|$))"
)
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_SENTENCE_END = re.compile(r"[.\n]")
_EDGE_PUNCTUATION = " \t\r\n.,;:!?\"'`*()[]{}"


def normalize_text(text: str) -> str:
    """Lower case, markdown emphasis removed, whitespace collapsed, edge punctuation stripped."""
    text = text.replace("**", "").replace("`", "")
    return " ".join(text.lower().split()).strip(_EDGE_PUNCTUATION)


def parse_options(options: Sequence[str] | str | None) -> list[tuple[str, str]]:
    """[(letter, option text)]: labels "A." / "(A)" / "A)" are used when every option
    has a distinct one; otherwise letters follow the position (A, B, C, ...)."""
    if options is None:
        return []
    if isinstance(options, str):
        items = [line for line in options.splitlines() if line.strip()]
    else:
        items = [str(item) for item in options]
    if len(items) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(items)}")
    matches = [_OPTION_LABEL.match(item) for item in items]
    labels = [next((g for g in m.groups()[:3] if g), None) if m else None for m in matches]
    if all(labels) and len(set(labels)) == len(labels):
        return [(label, m.group(4).strip()) for label, m in zip(labels, matches, strict=True)]
    parsed = []
    for position, (item, match, label) in enumerate(zip(items, matches, labels, strict=True)):
        letter = LETTERS[position]
        # Strip a label only when it is this position's letter ("B. red" as 2nd option).
        text = match.group(4).strip() if match and label == letter else item.strip()
        parsed.append((letter, text))
    return parsed


class _Choices:
    """Option letters and normalized texts for one question."""

    def __init__(self, options: Sequence[str] | str | None) -> None:
        parsed = parse_options(options)
        self.letters = [letter for letter, _ in parsed] or list(LETTERS)
        self.texts = {letter: normalize_text(text) for letter, text in parsed}

    def letter(self, candidate: str | None) -> str | None:
        if candidate is None:
            return None
        upper = candidate.upper()
        return upper if upper in self.letters else None

    def by_exact_text(self, text: str) -> str | None:
        wanted = normalize_text(text)
        hits = [letter for letter, t in self.texts.items() if t and t == wanted]
        return hits[0] if len(hits) == 1 else None

    def by_contained_text(self, text: str) -> str | None:
        haystack = normalize_text(text)
        hits = [
            letter
            for letter, t in self.texts.items()
            if t and re.search(rf"(?<![a-z0-9]){re.escape(t)}(?![a-z0-9])", haystack)
        ]
        if len(hits) == 1:
            return hits[0]
        covering = [h for h in hits if all(self.texts[o] in self.texts[h] for o in hits)]
        return covering[0] if len(covering) == 1 else None


def _first_group(match: re.Match[str], groups: int) -> str | None:
    return next((g for g in match.groups()[:groups] if g), None)


def _strip_markup(text: str) -> str:
    return text.replace("**", "").strip()


def _last_phrase_choice(text: str, choices: _Choices) -> str | None:
    """Letter from the LAST "answer is X" / "Answer: X" / "\\boxed{X}" with a usable X."""
    found: list[tuple[int, str]] = []
    for match in _ANSWER_PHRASE.finditer(text):
        rest = text[match.end() :]
        letter_match = _LETTER_AFTER_PHRASE.match(rest)
        letter = choices.letter(_first_group(letter_match, 4)) if letter_match else None
        if letter is None:
            sentence = _SENTENCE_END.split(rest, maxsplit=1)[0]
            letter = choices.by_exact_text(sentence)
        if letter is not None:
            found.append((match.start(), letter))
    for match in _BOXED.finditer(text):
        letter = _bare_choice(match.group(1), choices) or choices.by_exact_text(match.group(1))
        if letter is not None:
            found.append((match.start(), letter))
    return max(found)[1] if found else None


def _bare_choice(text: str, choices: _Choices) -> str | None:
    match = _BARE_LETTER.fullmatch(_strip_markup(text))
    return choices.letter(match.group(1)) if match else None


def _labelled_choice(text: str, choices: _Choices) -> tuple[bool, str | None]:
    """(text starts with a letter label, its letter or None when invalid/contradicted)."""
    match = _LEADING_LABEL.fullmatch(_strip_markup(text))
    if not match:
        return False, None
    letter = choices.letter(_first_group(match, 3))
    named = choices.by_exact_text(match.group(4))
    if named is not None and named != letter:
        return True, None  # "B. red" while red is option C: contradictory
    return True, letter


def _choice_in_content(content: str, choices: _Choices) -> str | None:
    """Read the content of an <answer> tag (rules 1a-1e)."""
    letter = _bare_choice(content, choices)
    if letter is not None:
        return letter
    labelled, letter = _labelled_choice(content, choices)
    if labelled:
        return letter
    return (
        _last_phrase_choice(content, choices)
        or choices.by_exact_text(content)
        or choices.by_contained_text(content)
    )


def _choice_in_free_text(text: str, choices: _Choices) -> str | None:
    """Read a response without answer tags (rules 2a-2d)."""
    letter = _last_phrase_choice(text, choices) or _bare_choice(text, choices)
    if letter is not None:
        return letter
    if "\n" not in text.strip():
        labelled, letter = _labelled_choice(text, choices)
        if labelled:
            return letter
    return choices.by_exact_text(text)


def extract_choice(text: str, options: Sequence[str] | str | None = None) -> str | None:
    """The option letter a response chose, or None (rules in the module docstring)."""
    choices = _Choices(options)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        # An unclosed <answer> after the last closed one is the final answer (cut output).
        last_close = list(_ANSWER_TAG.finditer(text))[-1].end()
        opened = list(_OPEN_ANSWER_TAG.finditer(text, last_close))
        content = text[opened[-1].end() :] if opened else tags[-1]
        return _choice_in_content(content, choices)
    opened = list(_OPEN_ANSWER_TAG.finditer(text))
    if opened:
        return _choice_in_content(text[opened[-1].end() :], choices)
    think_ends = list(_THINK_END.finditer(text))
    if think_ends:
        text = text[think_ends[-1].end() :]
    if not text.strip():
        return None
    return _choice_in_free_text(text, choices)


def gold_choice(answer: str, options: Sequence[str] | str | None = None) -> str:
    """The ground-truth letter of a dataset answer ("B", "(B)", "B. red", "red", "<answer>B</answer>").

    Raises ValueError naming the answer when it is not one of the choices.
    """
    letter = extract_choice(str(answer), options)
    if letter is None:
        choices = _Choices(options)
        raise ValueError(
            f"ground-truth answer {answer!r} is not one of the choices {choices.letters}"
            + (f" (options {list(options)})" if options is not None else "")
        )
    return letter
