"""Evaluation of a model directory, training checkpoint or run on a dataset (`longrl eval`)."""

from longrl.eval.errors import EvalError
from longrl.eval.report import EvalReport
from longrl.eval.runner import evaluate
from longrl.eval.scoring import QuestionResult, pass_at_k, score_question
from longrl.eval.summary import summarize, summarize_by_type

__all__ = [
    "EvalError",
    "EvalReport",
    "QuestionResult",
    "evaluate",
    "pass_at_k",
    "score_question",
    "summarize",
    "summarize_by_type",
]
