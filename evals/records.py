"""The evals' records: what a scorer returns (`ScoreResult`), and the quick SFT proxy's result (`ProxyResult`),
which `evals.proxy` writes as `proxy.json`.

Files keep the field names they always had: a proxy.json written before these records existed reads as a
`ProxyResult`. Keys a record does not declare are kept (`extra="allow"`), never dropped.
"""

from __future__ import annotations

import json
from collections.abc import ItemsView, Iterator, KeysView
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autodata._io import atomic_write_json
from evals.intervals import Interval

GENERATION_METRICS = ("em", "subem", "f1", "format_valid")
ScoreMetric = Literal["likelihood", "em", "subem", "f1", "format_valid"]


class Evidence(BaseModel):
    """What a paired comparison of two scores reads (the promotion gate): the questions, and the per-question
    numbers, one list per repeat in the order of `question_ids`."""

    question_ids: list[str]
    per_question: list[list[float]]


class ScoreResult(BaseModel):
    """What a `Scorer` (`evals.recipe_score`) returns: the score and, for intervals and paired differences
    (study rows, the promotion gate), the questions and the per-question numbers, one list per repeat in
    the order of `question_ids`. A scorer may add numbers of its own (logged to MLflow as metrics)."""

    model_config = ConfigDict(extra="allow")

    score_metric: str | None = None  # what `score` measures, when the scorer says
    score: float
    score_interval: Interval | None = None
    question_ids: list[str] | None = None
    per_question: list[list[float]] | None = None

    def record(self) -> dict[str, Any]:
        """The record as a plain dict with the keys a file holds (absent ones are not null but absent)."""
        return self.model_dump(exclude_none=True)

    def numbers(self) -> dict[str, float]:
        """Its top-level numbers as floats (booleans as 0 and 1): what MLflow logs as metrics."""
        return {k: float(v) for k, v in self.record().items() if isinstance(v, (int, float))}

    @property
    def evidence(self) -> dict[str, Any]:
        """`Evidence`'s fields, None where the scorer gave none (a study trial keeps it as a user attribute)."""
        return {"question_ids": self.question_ids, "per_question": self.per_question}


class ProxyResult(ScoreResult):
    """`proxy.json`: the proxy's score (`score_metric`) with its interval and per-question numbers per repeat,
    the likelihood probe's numbers, training statistics, and with generation the dev metrics of base and
    tuned student.

    It also reads as the dict proxy.json holds (`result["dev_n"]`, `"dev_em" in result`, `set(result)`),
    for callers written against that dict (the CLI, `bench/`).
    """

    score_metric: ScoreMetric
    score_interval: Interval
    question_ids: list[str]
    per_question: list[list[float]]  # [repeat][question], of `score_metric`
    dev_n: int
    per_question_by_metric: dict[str, list[list[float]]]  # likelihood, and the generation metrics when run
    repeats: int
    likelihood_base: float
    likelihood_tuned: float
    likelihood_gain: float
    likelihood_seconds: float
    train_loss: list[float]  # of the first repeat
    train_seconds: float  # all repeats
    # of the first repeat
    train_tokens: int
    train_tokens_per_s: float
    train_examples_drawn: int
    train_examples_too_long: int
    train_max_seq_tokens: int
    train_longest_example_tokens: int
    baseline_cached: bool
    device: str
    settings: dict[str, Any]  # `ProxySettings` as a dict
    # with generation only (`ProxySettings.generates`): tuned (mean over repeats) and base
    dev_em: float | None = None
    base_dev_em: float | None = None
    dev_subem: float | None = None
    base_dev_subem: float | None = None
    dev_f1: float | None = None
    base_dev_f1: float | None = None
    format_valid: float | None = None
    base_format_valid: float | None = None
    eval_seconds: float | None = None
    train_examples: int | None = None  # accepted items in the dataset trained on

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.record())

    @classmethod
    def read(cls, path: Path) -> ProxyResult:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    # --- read as the dict proxy.json holds ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.record()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.record()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a dict's keys, not pydantic's (name, value)
        return iter(self.record())

    def __len__(self) -> int:
        return len(self.record())

    def keys(self) -> KeysView[str]:
        return self.record().keys()

    def items(self) -> ItemsView[str, Any]:
        return self.record().items()

    def get(self, key: str, default: Any = None) -> Any:
        return self.record().get(key, default)
