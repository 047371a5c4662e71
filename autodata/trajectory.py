"""Search-agent trajectories as data, and the one place that renders them as text.

A trajectory is a list of steps: `SearchStep` (the agent's thought, its query, and the
retriever's formatted output) and a final `AnswerStep`. `to_messages` renders it as the
chat the agent sees at inference (Search-R1's prompt as the user turn, each observation
as `<information>...</information>` in a user turn), and `to_sharegpt` renders the same
messages for LLaMA-Factory, so the training prompt cannot drift from the inference one.

Observations are user (`human`) turns rather than ShareGPT `observation` turns on purpose:
chat templates render `observation` as a tool response, which an OpenAI-compatible
inference loop never sends, while a user turn renders identically in training and
inference. LLaMA-Factory trains on assistant turns only, so retrieved text is masked.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from autodata.search.protocol import format_hits
from prompts import load_prompt

SEARCH_STOP = "</search>"


class SearchStep(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["search"] = "search"
    think: str
    query: str
    observation: str  # format_hits(...) of what the retriever returned, truncated
    hit_ids: list[str]


class AnswerStep(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["answer"] = "answer"
    think: str
    answer: str


Step = SearchStep | AnswerStep


class Trajectory(BaseModel):
    model_config = ConfigDict(frozen=True)
    question: str
    steps: list[SearchStep | AnswerStep]

    @property
    def searches(self) -> list[SearchStep]:
        return [s for s in self.steps if isinstance(s, SearchStep)]

    @property
    def answer(self) -> str | None:
        last = self.steps[-1] if self.steps else None
        return last.answer if isinstance(last, AnswerStep) else None


def inference_prompt(question: str) -> str:
    """The user turn a search agent gets, byte for byte as Search-R1's data processing makes it
    (`make_prefix` in scripts/data_process/nq_search.py): the question stripped and ending in "?",
    then a newline."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return load_prompt("search_agent").format(question=question) + "\n"


def render_search(think: str, query: str) -> str:
    return f"<think> {think.strip()} </think>\n<search> {query.strip()} {SEARCH_STOP}"


def render_answer(think: str, answer: str) -> str:
    return f"<think> {think.strip()} </think>\n<answer> {answer.strip()} </answer>"


def render_information(observation: str) -> str:
    return f"<information>{observation.strip()}</information>"


def to_messages(trajectory: Trajectory) -> list[dict[str, str]]:
    """OpenAI chat messages: the conversation a search agent has at inference."""
    messages = [{"role": "user", "content": inference_prompt(trajectory.question)}]
    for step in trajectory.steps:
        if isinstance(step, SearchStep):
            messages.append({"role": "assistant", "content": render_search(step.think, step.query)})
            messages.append({"role": "user", "content": render_information(step.observation)})
        else:
            messages.append({"role": "assistant", "content": render_answer(step.think, step.answer)})
    return messages


def to_sharegpt(trajectory: Trajectory) -> dict:
    """One LLaMA-Factory ShareGPT example (`conversations` with `from`/`value`)."""
    roles = {"user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in to_messages(trajectory)]}


def sharegpt_problems(example: dict) -> list[str]:
    """What LLaMA-Factory would object to ("Skipping this abnormal example"), if anything.

    Its ShareGPT converter accepts `human`/`observation` at even indexes and
    `gpt`/`function_call` at odd ones, and needs an even number of turns.
    """
    turns = example.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["no conversations"]
    problems = []
    for index, turn in enumerate(turns):
        allowed = ("human", "observation") if index % 2 == 0 else ("gpt", "function_call")
        if turn.get("from") not in allowed:
            problems.append(f"turn {index}: role {turn.get('from')!r}, expected one of {allowed}")
        if not isinstance(turn.get("value"), str) or not turn["value"].strip():
            problems.append(f"turn {index}: empty value")
    if len(turns) % 2:
        problems.append(f"{len(turns)} turns: the count must be even")
    return problems


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_WELL_FORMED = re.compile(r"\s*<think>.+?</think>\s*(<search>.+?</search>|<answer>.+?</answer>)\s*", re.DOTALL)


def well_formed(turn: str) -> bool:
    """Whether an assistant turn is `<think>..</think>` then one `<search>..</search>` or `<answer>..</answer>`."""
    return _WELL_FORMED.fullmatch(turn) is not None


_SEARCH = re.compile(r"<search>(.*?)(?:</search>|$)", re.DOTALL)


def parse_answer(text: str) -> str | None:
    """The last `<answer>...</answer>` in a model's text, stripped."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


def parse_search(text: str) -> str | None:
    """The query of the last `<search>` in text cut at `</search>`."""
    found = _SEARCH.findall(text)
    return found[-1].strip() if found else None


def observation_text(hits, max_tokens: int | None = None, tokenizer: str | None = None) -> str:
    """What a search step observes: the hits as Search-R1's `_passages2string` renders them,
    cut to `max_tokens` tokens of `tokenizer` when set (see `SearchRecipe`)."""
    text = format_hits(hits)
    if max_tokens is None:
        return text
    tok = _load_tokenizer(tokenizer)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tok.decode(ids[:max_tokens])


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    """A Hugging Face tokenizer from a folder, or from the tokenizer inside a .gguf file."""
    from autodata.errors import RecipeError

    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise RecipeError("Cutting observations by tokens needs transformers (pip install 'autodata[proxy]').") from err
    file = Path(path).expanduser()
    if not file.exists():
        raise RecipeError(f"observation_tokenizer {path} does not exist: give the student's tokenizer folder or .gguf.")
    try:
        if file.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        return AutoTokenizer.from_pretrained(file)
    except (OSError, ValueError) as err:
        raise RecipeError(f"observation_tokenizer {path} is not a tokenizer: {err}") from err
