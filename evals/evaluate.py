"""Evaluate a model in the exact inference loop the training data teaches.

The loop is Search-R1's: the prompt of `prompts/search_agent.md` as the user turn; the
model generates until `</search>` (or an answer); the query is searched and the result
comes back as a user turn `<information>...</information>`; up to `max_turns` turns. The
turns are rendered by `autodata.trajectory`, the same code that renders the SFT data.

Outputs (OUT): `predictions.json` (split order, `{"id", "predicted_answer"}`, "" when no
answer), `trajectories.jsonl` (appended per question: a re-run resumes), and for splits
with answers `metrics.json`. `--baselines` adds direct answering and naive RAG (top-k
passages in the prompt) with the same model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from autodata._io import append_jsonl, atomic_write_json, atomic_write_jsonl, iter_jsonl
from autodata.answers import answer_form
from autodata.errors import SeedDataError
from autodata.llm import RoleClient
from autodata.search.protocol import Retriever
from autodata.seeds import SeedItem
from autodata.trajectory import (
    SEARCH_STOP,
    inference_prompt,
    observation_text,
    parse_answer,
    parse_search,
    render_information,
    well_formed,
)
from evals.metrics import score_answers

logger = logging.getLogger(__name__)

Mode = Literal["search_agent", "direct", "naive_rag"]
DIRECT_PROMPT = (
    "Answer the given question directly, without detailed illustrations, inside <answer> and </answer>. "
    "For example, <answer> Beijing </answer>. Question: {question}"
)
RAG_PROMPT = (
    "Answer the given question using the documents below, without detailed illustrations, inside <answer> and "
    "</answer>. For example, <answer> Beijing </answer>.\n\nDocuments:\n{documents}\nQuestion: {question}"
)


@dataclass(frozen=True)
class LoopSettings:
    top_k: int = 3
    max_turns: int = 4
    max_observation_tokens: int | None = None  # None: observations as Search-R1 renders them, not cut
    observation_tokenizer: str | None = None  # whose tokens max_observation_tokens counts
    max_tokens_per_turn: int = 256


def run_search_agent(client: RoleClient, retriever: Retriever, question: str, loop: LoopSettings) -> dict:
    """One question through the Search-R1 loop: the chat, the answer ("" if none), and whether
    every assistant turn was well formed (the format the SFT data teaches)."""
    messages = [{"role": "user", "content": inference_prompt(question)}]
    searches, answer = 0, None
    for _ in range(loop.max_turns):
        reply = client.chat(messages, stop=[SEARCH_STOP], max_tokens=loop.max_tokens_per_turn, temperature=0.0).text
        answer = parse_answer(reply)
        query = None if answer is not None else parse_search(reply)
        if query:  # generation stopped at </search>: put it back, as the training text has it
            reply = reply.rstrip() + " " + SEARCH_STOP
        messages.append({"role": "assistant", "content": reply})
        if not query:
            break  # an answer, or neither a search nor an answer
        hits = retriever.search([query], topk=loop.top_k)[0]
        observation = observation_text(hits, loop.max_observation_tokens, loop.observation_tokenizer)
        messages.append({"role": "user", "content": render_information(observation)})
        searches += 1
    turns = [m["content"] for m in messages if m["role"] == "assistant"]
    # Valid: every turn well formed, and the last one an answer (searching until the turns run out is not).
    return {
        "messages": messages,
        "answer": answer or "",
        "searches": searches,
        "format_valid": answer is not None and all(well_formed(turn) for turn in turns),
    }


def run_single_turn(client: RoleClient, retriever: Retriever, question: str, loop: LoopSettings, mode: Mode) -> dict:
    if mode == "direct":
        prompt = DIRECT_PROMPT.format(question=question)
    else:
        hits = retriever.search([question], topk=loop.top_k)[0]
        documents = observation_text(hits, loop.max_observation_tokens, loop.observation_tokenizer)
        prompt = RAG_PROMPT.format(documents=documents, question=question)
    messages = [{"role": "user", "content": prompt}]
    reply = client.chat(messages, max_tokens=loop.max_tokens_per_turn, temperature=0.0).text
    answer = parse_answer(reply)
    messages.append({"role": "assistant", "content": reply})
    return {
        "messages": messages,
        "answer": answer or "",
        "searches": 0 if mode == "direct" else 1,
        "format_valid": answer is not None,
    }


def evaluate(
    items: list[SeedItem],
    out: Path,
    *,
    client: RoleClient,
    retriever: Retriever,
    loop: LoopSettings,
    mode: Mode = "search_agent",
    concurrency: int = 1,
    show_progress: bool = True,
) -> dict | None:
    """Run `mode` over `items` into `out`; returns metrics when every item has answers."""
    if not items:
        raise SeedDataError("Nothing to evaluate: the split is empty.")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "trajectories.jsonl"
    done = {row["id"]: row for row in iter_jsonl(log, missing_ok=True)}  # a torn last line: that question runs again
    atomic_write_jsonl(log, done.values(), fsync=True)  # what was read back, whole: nothing appends onto a torn line
    todo = [item for item in items if item.id not in done]

    def run_one(item: SeedItem) -> dict:
        if mode == "search_agent":
            result = run_search_agent(client, retriever, item.question, loop)
        else:
            result = run_single_turn(client, retriever, item.question, loop, mode)
        return {"id": item.id, "question": item.question, **result}

    with ThreadPoolExecutor(concurrency) as pool:
        bar = tqdm(
            total=len(items),
            initial=len(items) - len(todo),
            desc=f"evaluating ({mode})",
            unit=" q",
            disable=not show_progress,
        )
        for row in pool.map(run_one, todo):
            append_jsonl(log, [row])
            done[row["id"]] = row
            bar.update(1)
        bar.close()
    rows = [done[item.id] for item in items]
    atomic_write_json(out / "predictions.json", [{"id": r["id"], "predicted_answer": r["answer"]} for r in rows])
    if any(item.golden_answers is None for item in items):
        return None  # a hidden test split: predictions only
    metrics = compute_metrics(items, rows)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def compute_metrics(items: list[SeedItem], rows: list[dict]) -> dict:
    means, per_example = score_answers([r["answer"] for r in rows], [item.golden_answers for item in items])
    n = len(rows)
    metrics = {
        "n": n,
        **{name: round(value, 6) for name, value in means.items()},
        "invalid_format_rate": round(sum(not r["format_valid"] for r in rows) / n, 6),
        "answered_rate": round(sum(bool(r["answer"]) for r in rows) / n, 6),
        "mean_searches": round(sum(r["searches"] for r in rows) / n, 4),
    }
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        kind = item.metadata.get("task_type") or item.metadata.get("type")
        if kind:
            groups[str(kind)].append(index)
    if groups:
        metrics["by_type"] = {
            kind: {"n": len(idx), **{m: round(sum(per_example[m][i] for i in idx) / len(idx), 6) for m in per_example}}
            for kind, idx in sorted(groups.items())
        }
        metrics.update(behaviour_metrics(groups, [answer_form(r["answer"]) for r in rows], metrics["by_type"]))
    return metrics


# The task types whose items are judged by the answer's form (`autodata.answers.answer_form`).
FORM_OF_TYPE = {
    "insufficient_evidence": "refusal",
    "false_premise": "correction",
    "conflicting_evidence": "conflict",
    "scope_ambiguity": "scope",
}


def behaviour_metrics(groups: dict[str, list[int]], forms: list[str], by_type: dict[str, dict]) -> dict:
    """Refusal precision and recall over all items (a refusal is right on an insufficient-evidence
    item), and per type the share of false-premise items corrected and conflicts reported.
    Adds `form_rate` to `by_type`'s entries in place; returns {"refusal": ...} when it applies."""
    for kind, form in FORM_OF_TYPE.items():
        if kind in groups:
            by_type[kind]["form_rate"] = round(sum(forms[i] == form for i in groups[kind]) / len(groups[kind]), 6)
    refused = {i for i, form in enumerate(forms) if form == "refusal"}
    should = set(groups.get("insufficient_evidence", ()))
    if not refused and not should:
        return {}
    right = len(refused & should)
    return {
        "refusal": {
            "precision": round(right / len(refused), 6) if refused else None,
            "recall": round(right / len(should), 6) if should else None,
            "refused": len(refused),
            "should_refuse": len(should),
        }
    }
