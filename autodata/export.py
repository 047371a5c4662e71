"""Datasets written from accepted items: LLaMA-Factory ShareGPT and the mid-train form."""

from __future__ import annotations

from pathlib import Path

from autodata._io import atomic_write_json, atomic_write_jsonl
from autodata.answers import answer_form, facts_of, split_as_of, split_readings, sub_exact_match
from autodata.items import AcceptedItem
from autodata.trajectory import SearchStep, sharegpt_problems, to_sharegpt

DATASET_NAME = "search_sft"


def dataset_info(file_name: str = f"{DATASET_NAME}.json") -> dict:
    """The `dataset_info.json` entry LLaMA-Factory needs for our ShareGPT file."""
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    return {DATASET_NAME: {"file_name": file_name, "formatting": "sharegpt", "columns": columns}}


# The judgement of each task type's answer, from its fixed form (`autodata.answers.answer_form`).
VERDICTS = {
    "fact": "supported",
    "refusal": "insufficient",
    "correction": "refuted",
    "conflict": "conflicting",
    "scope": "depends_on_scope",
}


def midtrain_record(item: AcceptedItem) -> dict:
    """The structured mid-train form: claims, evidence matching with each passage's stance, the
    judgement (supported, refuted, conflicting, depends_on_scope or insufficient) and, for a
    conflict or an ambiguous scope, its resolution."""
    form, facts = answer_form(item.answer), facts_of(item.answer)
    evidence = []
    for step in item.trajectory.steps:
        if isinstance(step, SearchStep):
            for block in step.observation.split("\nDoc ")[:10]:
                stated = [f for f in facts if sub_exact_match(block, [f])]
                evidence.append(
                    {
                        "id": f"E{len(evidence) + 1}",
                        "query": step.query,
                        "snippet": block.removeprefix("Doc ").strip()[:400],
                        "states": stated,
                        "stance": _stance(form, facts, stated),
                    }
                )
    support_ids = [e["id"] for e in evidence if e["states"]]
    record = {
        "query": item.question,
        "category": item.tags.task_type,
        "claims": _claims(item, form, facts),
        "evidence": evidence,
        "judgement": {"verdict": VERDICTS[form] if support_ids or not facts else "insufficient",
                      "supporting_evidence": support_ids},
        "response": item.answer,
    }  # fmt: skip
    if form in ("conflict", "scope"):
        sources = {f: [e["id"] for e in evidence if f in e["states"]] for f in facts}
        rule = "report every value with its sources" if form == "conflict" else "answer each reading separately"
        record["conflict_resolution"] = {"rule": rule, "values": sources}
    return record


def _stance(form: str, facts: tuple[str, ...], stated: list[str]) -> str:
    """A passage's stance toward the question's claim: it supports, refutes (a false premise's
    correction), supports one side of a conflict, or is neutral (states nothing it rests on)."""
    if not stated:
        return "neutral"
    return {"correction": "refutes", "conflict": "supports_one_side", "scope": "supports_one_reading"}.get(
        form, "supports"
    )


def _claims(item: AcceptedItem, form: str, facts: tuple[str, ...]) -> list[str]:
    """The claims the answer decomposes into, one per fact it rests on."""
    question, dated = item.question, split_as_of(item.answer)
    if form == "refusal":
        claims = [f"The retrieved evidence states no answer to {question!r}."]
    elif form == "correction":
        claims = [f"The question {question!r} presupposes what the evidence contradicts; it states {facts[0]!r}."]
    elif form == "conflict":
        claims = [f"One source gives {fact!r} for what {question!r} asks." for fact in facts]
    elif form == "scope":
        readings = split_readings(item.answer) or []
        claims = [f"Read as {reading!r}, the answer to {question!r} is {value!r}." for value, reading in readings]
    elif dated:
        claims = [f"As of {dated[1]}, the answer to {question!r} is {dated[0]!r}."]
    else:
        claims = [f"The answer to {question!r} is {item.answer!r}."]
    if item.bridge:
        claims.insert(0, f"The question describes {item.bridge!r} without naming it.")
    return claims


def write_datasets(items: list[AcceptedItem], out: Path, sft_name: str = "sft_dataset.json") -> dict[str, int]:
    """Write sft_dataset.json, dataset_info.json and midtrain.jsonl; return gate results."""
    # No system prompt: LLaMA-Factory then uses the template's default, as chat servers do at inference.
    examples = [{**to_sharegpt(item.trajectory), "system": "", "tools": ""} for item in items]
    problems = {i: sharegpt_problems(e) for i, e in enumerate(examples)}
    bad = [i for i, found in problems.items() if found]
    if bad:  # never hand LLaMA-Factory an example it would skip
        raise ValueError(f"ShareGPT rules broken by item {items[bad[0]].id}: {problems[bad[0]]}")
    atomic_write_json(out / sft_name, examples)
    atomic_write_json(out / "dataset_info.json", dataset_info(sft_name))
    atomic_write_jsonl(out / "midtrain.jsonl", [midtrain_record(item) for item in items])
    return {"sharegpt_examples": len(examples), "sharegpt_rule_violations": 0}


def llamafactory_config(dataset_dir: Path, *, model: str, output_dir: str) -> dict:
    """A LLaMA-Factory full-SFT config for our dataset, like the seed task's Qwen2.5-7B recipe."""
    return {
        "model_name_or_path": model,
        "trust_remote_code": True,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "deepspeed": "examples/deepspeed/ds_z3_config.json",
        "dataset": DATASET_NAME,
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "template": "qwen",
        "cutoff_len": 4096,
        "overwrite_cache": True,
        "preprocessing_num_workers": 16,
        "output_dir": output_dir,
        "logging_steps": 10,
        "save_steps": 500,
        "plot_loss": True,
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1.0e-5,
        "num_train_epochs": 3.0,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "bf16": True,
    }
