"""The records of a synthesis run folder, as pydantic models: what is written is read back through them.

    trajectories.jsonl   one `AcceptedItem` a line
    rejected.jsonl       one `Rejection` a line
    progress.jsonl       one `ProgressLine` a line (a finished seed and its LLM cost)
    manifest.json        the `RunManifest`

A record is written as `json.dumps(record.model_dump(), ensure_ascii=False)`, so the fields are
declared in the order they are written and a null stays a null: a run folder written before
these models existed reads back, and writes again, byte for byte. A field a model does not know
is an error, never a field silently left out of a rewritten file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict

from autodata._io import iter_jsonl, jsonl_line
from autodata.trajectory import Trajectory

# Why a seed or a candidate question was rejected; the manifest counts them (`rejections`).
RejectionReason = Literal[
    "contaminated_seed",  # the seed overlaps a held-out (dev/test) question: no LLM call spent
    "no_evidence",  # no retrieved passage holds a golden answer: no LLM call spent
    "invalid",
    "leak",
    "unsupported",
    "duplicate",
    "too_easy",
    "too_hard",
    "gap",
    "unverified",
    "hint_leak",
    "bad_thought",
    "ungrounded_thought",  # a thought states a name or number nothing it saw holds, or answers before searching
    "not_multi_hop",  # a two-hop question answered without walking both hops
    "answerable",  # an insufficient-evidence question whose answer a search retrieves
    "paraphrase",  # the question paraphrases a held-out question with the same answer
    "worker_died",  # the seed was in flight each time its Ray worker died (ray_executor.SEED_DEATHS)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(_Model):
    """One line of a run folder's JSONL file."""

    @classmethod
    def read(cls, path: Path) -> Iterator[Self]:
        """The records of `path`, one line at a time (none if it does not exist; a torn last line ends them)."""
        return (cls.model_validate(row) for row in iter_jsonl(path, missing_ok=True))

    def line(self) -> str:
        return jsonl_line(self.model_dump())


class Tags(_Model):
    """The tagger's classification of the accepted question (None where its reply could not be parsed)."""

    task_type: str | None = None
    needs_search: bool | None = None
    evidence_scope: str | None = None
    recommended_sources: list[str] | None = None


class WeakSolving(_Model):
    mode: str  # the recipe's weak_mode
    scores: list[float]  # 0/1 per attempt made, in rollout order


class StrongSolving(_Model):
    hint_mode: str
    hint: str  # what the strong solver was told privately (never part of the trajectory)
    scores: list[float]


class AcceptedItem(Record):
    """A line of trajectories.jsonl: a verified question, its answer and the trajectory kept."""

    id: str  # f"{seed_id}-r{round}"
    seed_id: str
    round: int
    strategy: str
    hops: int
    question: str
    answer: str
    bridge: str | None  # a multi-hop question's hidden entity
    passage_ids: list[str]
    tags: Tags
    weak: WeakSolving
    strong: StrongSolving
    acceptance_rule: str
    recipe_hash: str
    trajectory: Trajectory


class Rejection(Record):
    """A line of rejected.jsonl. A seed rejected before any round (`no_evidence`, `contaminated_seed`)
    has no round, strategy, question or answer; a round whose challenger wrote nothing usable has no
    question or answer."""

    seed_id: str
    round: int | None = None
    strategy: str | None = None
    reason: RejectionReason
    detail: str
    question: str | None = None
    answer: str | None = None
    recipe_hash: str | None = None


class RoleCost(_Model):
    calls: int
    prompt_tokens: int
    completion_tokens: int


class ProgressLine(Record):
    """A line of progress.jsonl, written after the seed's items: a seed with one is done."""

    seed_id: str
    accepted: int
    rejected: int
    cost: dict[str, RoleCost]  # per role


class SeedCounts(_Model):
    total: int
    done: int
    with_evidence: int
    with_accepted_item: int
    contaminated_skipped: int


class ItemCounts(_Model):
    accepted: int
    in_datasets: int
    rejected_candidates: int


class RoleCostPerItem(_Model):
    calls: float
    prompt_tokens: float
    completion_tokens: float


class QualityGates(_Model):
    sharegpt_examples: int
    sharegpt_rule_violations: int
    near_duplicates_removed: int
    contaminated_removed: int
    contamination_checked_against: int
    all_with_search: bool
    max_turns: int


class TargetOutcome(_Model):
    """A run with `--target-accepted`: the target, whether the accepted items reached it, and the
    seeds it took (seeds in flight when it was reached also finish, so it may be passed)."""

    accepted: int
    met: bool
    seeds_used: int


class RunManifest(_Model):
    """manifest.json of a finished run (`autodata.synthesis.finalize`)."""

    dataset_version: str
    recipe_hash: str
    recipe_name: str
    recipe_source: str
    acceptance_rule: str
    hint_mode: str
    weak_mode: str
    seeds: SeedCounts
    items: ItemCounts
    acceptance_rate: float  # per candidate question that reached the checks
    accepted_per_seed: float
    accepted_per_seed_with_evidence: float
    by_strategy: dict[str, int]
    by_task_type: dict[str | None, int]  # None: the tagger's reply could not be parsed
    by_hops: dict[str, int]
    rejections: dict[str, int]
    llm_per_accepted_item: dict[str, RoleCostPerItem]
    llm_totals: dict[str, RoleCost]
    quality_gates: QualityGates
    files: list[str]
    autodata_version: str
    target: TargetOutcome | None = None  # only runs given a target carry the key

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def record(self) -> dict:
        """What manifest.json holds."""
        return self.model_dump(exclude={"target"} if self.target is None else None)
