"""Evaluation: answer metrics (`evals.metrics`) and scoring of prediction files (`evals.scoring`).

The normalization and matching underneath live in `autodata.answers`, so the core
package never imports `evals`.
"""

from evals.metrics import exact_match, f1_score, normalize_answer, score_answers, sub_exact_match

__all__ = ["exact_match", "f1_score", "normalize_answer", "score_answers", "sub_exact_match"]
