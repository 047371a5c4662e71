"""The recipe: everything that decides what the inner loop keeps, as one frozen object.

Its content hash versions every artifact it produces (output folders, MLflow runs,
dataset manifests). Build variants with `recipe.with_changes(...)`, which validates,
never with `model_copy(update=...)`, which does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autodata.errors import RecipeError, parser_limit
from prompts import load_prompt

OptimizableRole = Literal["challenger", "tagger", "verifier"]
Strategy = Literal[
    "keep",
    "rephrase",
    "multi_hop",
    "insufficient_evidence",
    "false_premise",
    "conflicting_evidence",
    "timely",
    "scope_ambiguity",
    "document_based",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Acceptance(_Frozen):
    """Keep a candidate when the strong solver succeeds and the weak one fails.

    Accuracies are over `attempts_per_solver` samples, scored by Exact Match against
    the candidate's answer. Defaults follow Autodata's CS-research rule: strong >= 0.65,
    weak < 0.5, gap >= 0.2 (with 3 attempts: strong 2 of 3 or better, weak 1 of 3 or worse).
    """

    rule: str = "autodata-strong0.65-weak0.5-gap0.2"  # a name recorded with every item
    attempts_per_solver: int = Field(3, ge=1, le=16)
    strong_min_accuracy: float = Field(0.65, ge=0, le=1)
    weak_max_accuracy: float = Field(0.5, gt=0, le=1)  # weak accuracy must stay strictly below
    min_gap: float = Field(0.2, ge=0, le=1)
    early_stop: bool = True  # stop sampling a solver once its side of the rule is decided


class SearchRecipe(_Frozen):
    """How the solvers and the eval loop search, and what an observation holds.

    By default an observation is exactly Search-R1's `_passages2string` of the hits, not
    cut (Search-R1's trainer truncates observation tokens itself, 500 by default). To cut
    in the text instead, set `max_observation_tokens` and `observation_tokenizer`: the
    student's tokenizer (a Hugging Face folder or a .gguf file), whose tokens are counted.
    """

    top_k: int = Field(3, ge=1, le=50)
    max_turns: int = Field(4, ge=1, le=10)  # assistant turns, the answer turn included
    max_observation_tokens: int | None = Field(None, ge=16, le=32_000)  # None: not cut
    observation_tokenizer: str | None = None  # the student's tokenizer: HF folder or .gguf file
    evidence_passages: int = Field(5, ge=1, le=20)  # size of the challenger's evidence pack

    @model_validator(mode="after")
    def _tokens_need_a_tokenizer(self) -> SearchRecipe:
        if self.max_observation_tokens is not None and not self.observation_tokenizer:
            raise ValueError(
                "max_observation_tokens counts tokens of the student's tokenizer: set "
                "observation_tokenizer to its Hugging Face folder or .gguf file"
            )
        return self


class StrategyMix(_Frozen):
    """Relative weights of the challenger's strategies; at least one must be positive."""

    keep: float = Field(0.6, ge=0)  # the seed question as it is
    rephrase: float = Field(0.25, ge=0)  # same answer, new wording
    multi_hop: float = Field(0.15, ge=0)  # compose over a bridge entity: two passages needed
    # The task types beyond fact lookup (README "Task types"); off by default, so EM-style
    # worlds keep their data, and in a study's search space.
    insufficient_evidence: float = Field(0.0, ge=0)  # the corpus does not hold the answer: refuse
    false_premise: float = Field(0.0, ge=0)  # the question presupposes what a passage contradicts
    conflicting_evidence: float = Field(0.0, ge=0)  # two passages give different values
    timely: float = Field(0.0, ge=0)  # a time-dependent fact, answered "as of" the evidence's date
    scope_ambiguity: float = Field(0.0, ge=0)  # two readings of the question, each with its own value
    document_based: float = Field(0.0, ge=0)  # what one named article says

    @model_validator(mode="after")
    def _some_weight(self) -> StrategyMix:
        if sum(self.weights().values()) <= 0:
            raise ValueError("at least one strategy weight must be positive")
        return self

    def weights(self) -> dict[Strategy, float]:
        return {name: getattr(self, name) for name in type(self).model_fields}


def _default_instructions() -> dict[OptimizableRole, str]:
    return {role: load_prompt(role) for role in ("challenger", "tagger", "verifier")}


class Recipe(_Frozen):
    """A data recipe. Example: `Recipe().with_changes(max_rounds=2).content_hash`."""

    schema_version: Literal[1] = 1
    name: str = "default"
    instructions: dict[OptimizableRole, str] = Field(default_factory=_default_instructions)
    acceptance: Acceptance = Acceptance()
    max_rounds: int = Field(3, ge=1, le=10)  # challenger rounds per seed
    strategies: StrategyMix = StrategyMix()
    search: SearchRecipe = SearchRecipe()
    weak_mode: Literal["closed_book", "rag"] = "closed_book"
    # The strong solver's private hint, never shown in the kept trajectory:
    #   none: it solves alone; titles: it is told the supporting passages' titles;
    #   answer: it is told the answer and the article that states it, and must find and
    #   cite the evidence by searching (STaR-style rationalization). SmolLM2-135M answers 0
    #   of 100 NQ questions exactly, so the embedded default uses `answer`; a 72B strong
    #   solver should use `none`.
    hint_mode: Literal["none", "titles", "answer"] = "answer"
    llm_judge: bool = False  # also ask the judge model to accept each kept trajectory
    output_format: Literal["sharegpt"] = "sharegpt"

    @model_validator(mode="after")
    def _instructions_complete(self) -> Recipe:
        missing = {"challenger", "tagger", "verifier"} - set(self.instructions)
        if missing:
            raise ValueError(f"instructions missing for: {', '.join(sorted(missing))}")
        return self

    @property
    def content_hash(self) -> str:
        """What the recipe does, hashed; its `name` is only a label, so equal recipes with other
        names share output folders (a repeated study trial resumes the same synthesis). Strategies
        weighted 0 are left out, so adding a strategy changes no existing recipe's hash."""
        data = self.model_dump(mode="json", exclude={"name"})
        data["strategies"] = {name: weight for name, weight in data["strategies"].items() if weight}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_changes(self, **changes) -> Recipe:
        """A validated copy with top-level fields replaced (nested ones as dicts or models)."""
        data = self.model_dump()
        for key, value in changes.items():
            data[key] = value.model_dump() if isinstance(value, BaseModel) else value
        return parse_recipe(data, source="recipe changes")

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)
        if any(ch in text for ch in YAML_LINE_BREAKS):  # written raw, YAML would read them back as line breaks
            text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=False, width=100)
        return text


YAML_LINE_BREAKS = "\x85\u2028\u2029"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the instructions) as readable `|` blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


def parse_recipe(data: dict, *, source: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}" for e in err.errors(include_url=False)
        )
        raise RecipeError(f"Invalid recipe in {source}: {problems}") from err


def load_recipe(path: Path) -> Recipe:
    """A recipe from a YAML file; missing fields take their defaults."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RecipeError(f"Recipe file {path} is not UTF-8 text ({err.reason} at byte {err.start}).") from err
    except yaml.YAMLError as err:
        raise RecipeError(f"Recipe file {path} is not valid YAML: {err}") from err
    except (ValueError, RecursionError) as err:  # a number of over 4,300 digits, nesting too deep to parse
        raise RecipeError(f"Recipe file {path} cannot be read as a recipe ({parser_limit(err)}).") from None
    data = {} if data is None else data  # an empty file: every field takes its default
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe file {path}: the top level must be a mapping of recipe fields.")
    return parse_recipe(data, source=str(path))
