"""The quick SFT proxy: LoRA-tune a small student on a recipe's data, then score it on dev.

Steps: load the student (the embedded SmolLM2 GGUF, dequantized, or a local Hugging
Face folder); build training sequences from `sft_dataset.json` with the student's chat
template, with loss only on the assistant's own tokens (prompt and retrieved
`<information>` turns are masked); LoRA for a bounded number of steps and seconds at a
fixed seed; merge; convert base and tuned weights to GGUF with llama.cpp's converter
(from the pinned llama-cpp-python sdist); serve each with llama.cpp and run the dev
subset through the same loop as `autodata eval`. Both scores come from one run.

CUDA and bf16 are used when a GPU is present; generation stays on llama.cpp, which
generates 35-68 tokens/s here against transformers' ~8.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from autodata._io import atomic_write_json
from autodata.errors import ProxyTrainingFailed
from autodata.llm.client import RoleClient
from autodata.llm.embedded import EmbeddedServer
from autodata.llm.limiter import AdaptiveLimiter
from autodata.llm.usage import UsageLedger
from autodata.packages import PackageSource, fetch_package
from autodata.search.protocol import Retriever
from autodata.seeds import SeedItem
from autodata.settings import EmbeddedModelSettings, EndpointSettings
from autodata.trajectory import sharegpt_problems
from evals.evaluate import LoopSettings, evaluate

logger = logging.getLogger(__name__)

LLAMA_CPP_SOURCE = PackageSource(
    name="llama-cpp-python",
    version="0.3.36",
    filename="llama_cpp_python-0.3.36.tar.gz",
    sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    license="MIT",
    used_for="tool: vendor/llama.cpp/convert_hf_to_gguf.py with its conversion/ and gguf-py/",
    sdist=True,
)
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


@dataclass(frozen=True)
class ProxySettings:
    """How the proxy trains and scores. Defaults fit 2 CPU cores in about 10 minutes."""

    steps: int = 64  # optimizer steps, one example each
    max_items: int = 64  # training examples drawn from the dataset
    max_seq_tokens: int = 2048  # whole examples only: longer ones are left out (and counted), never cut
    max_train_seconds: float = 420.0
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: int = 16
    dev_limit: int = 30
    max_turns: int = 3  # up to 2 searches, then an answer
    max_tokens_per_turn: int = 96
    score_metric: Literal["em", "subem", "f1", "format_valid"] = "em"
    seed: int = 13


def load_examples(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / "sft_dataset.json"
    if not path.is_file():
        raise ProxyTrainingFailed(f"{path} does not exist: point --data at a finished `autodata synthesize` folder.")
    try:
        examples = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ProxyTrainingFailed(f"{path}, line {err.lineno}: not JSON ({err.msg}).") from err
    if not examples:
        raise ProxyTrainingFailed(f"{path} holds no accepted items: nothing to train on.")
    for index, example in enumerate(examples):
        if problems := sharegpt_problems(example):
            raise ProxyTrainingFailed(f"{path}, record {index}: {'; '.join(problems)}")
    return examples


def resolve_student(student: Path | None, embedded_gguf: Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) of the student; checks it is a model before any work."""
    if student is None:
        return embedded_gguf.parent, embedded_gguf.name
    student = Path(student)
    if student.is_file() and student.suffix == ".gguf":
        return student.parent, student.name
    if student.is_dir() and (student / "config.json").is_file():
        return student, None
    raise ProxyTrainingFailed(f"{student} is not a model: give a .gguf file or a Hugging Face folder with config.json.")


def encode(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """Token ids and labels of a whole example; only the assistant turns' tokens (and their end
    marker) are learned. Nothing is cut: `fit_examples` leaves out what does not fit."""
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                for t in example["conversations"]]  # fmt: skip
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
            end = len(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False))
            spans.append((start, end))
    encoded = tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    labels = [
        token if any(start <= a and b <= end for start, end in spans) and b > a else -100
        for token, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
    return encoded["input_ids"], labels


def fit_examples(tokenizer, examples: list[dict], max_tokens: int) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """The examples that fit whole in `max_tokens`, encoded, and how many did not.

    A sequence cut before its final answer turn would teach searching without answering,
    so an example too long is left out, never truncated.
    """
    encoded = [encode(tokenizer, example) for example in examples]
    fitting = [(ids, labels) for ids, labels in encoded if len(ids) <= max_tokens]
    lengths = [len(ids) for ids, _ in encoded]
    return fitting, {"train_examples_drawn": len(encoded), "train_examples_too_long": len(encoded) - len(fitting),
                     "train_max_seq_tokens": max_tokens,
                     "train_longest_example_tokens": max(lengths, default=0)}  # fmt: skip


def converter(cache_dir: Path) -> Path:
    """llama.cpp's HF-to-GGUF converter, extracted once from the pinned sdist."""
    target = cache_dir / "tools" / f"llama.cpp-{LLAMA_CPP_SOURCE.version}"
    script = target / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    archive = fetch_package(LLAMA_CPP_SOURCE, cache_dir / "packages")
    prefix = f"llama_cpp_python-{LLAMA_CPP_SOURCE.version}/vendor/llama.cpp/"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and
                   m.name[len(prefix):].startswith(CONVERTER_MEMBERS) and (m.isfile() or m.isdir())]  # fmt: skip
        for member in members:
            member.name = member.name[len(prefix):]
        tar.extractall(staging, members=members, filter="data")
    staging.rename(target)
    return script


def to_gguf(model, tokenizer, folder: Path, out_file: Path, cache_dir: Path) -> Path:
    """Save HF weights and convert them to an f16 GGUF for llama.cpp."""
    model.hf_quantizer = None  # a GGUF-loaded model is dequantized already; let it save
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    script = converter(cache_dir)
    env = {**os.environ, "PYTHONPATH": str(script.parent / "gguf-py")}
    done = subprocess.run([sys.executable, str(script), str(folder), "--outfile", str(out_file), "--outtype", "f16"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-8:])
        raise ProxyTrainingFailed(f"GGUF conversion of {folder} failed:\n{tail}")
    return out_file


def train_lora(model, tokenizer, examples: list[dict], settings: ProxySettings, device: str) -> tuple[object, list[float], dict]:
    import torch
    from peft import LoraConfig, get_peft_model

    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    chosen = rng.sample(examples, min(settings.max_items, len(examples)))
    encoded, fit = fit_examples(tokenizer, chosen, settings.max_seq_tokens)
    if fit["train_examples_too_long"]:
        logger.warning("proxy: %d of %d examples are longer than %d tokens and were left out",
                       fit["train_examples_too_long"], len(chosen), settings.max_seq_tokens)  # fmt: skip
    encoded = [(ids, labels) for ids, labels in encoded if any(label != -100 for label in labels)]
    if not encoded:
        raise ProxyTrainingFailed(f"No training example fits whole in max_seq_tokens={settings.max_seq_tokens} "
                                  f"(the longest has {fit['train_longest_example_tokens']} tokens).")  # fmt: skip
    config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    losses, tokens, started = [], 0, time.monotonic()
    for step in tqdm(range(settings.steps), desc="LoRA training", unit=" step"):
        ids, labels = encoded[step % len(encoded)]
        batch = {"input_ids": torch.tensor([ids], device=device), "labels": torch.tensor([labels], device=device)}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        tokens += len(ids)
        if time.monotonic() - started > settings.max_train_seconds:
            logger.warning("proxy training stopped at its time limit after %d steps", step + 1)
            break
    seconds = time.monotonic() - started
    return model.merge_and_unload(), losses, {"train_seconds": round(seconds, 2), "train_tokens": tokens,
                                              "train_tokens_per_s": round(tokens / seconds, 1), **fit}  # fmt: skip


def score_gguf(gguf: Path, items: list[SeedItem], out: Path, retriever: Retriever, settings: ProxySettings,
               log_file: Path) -> tuple[dict, float]:  # fmt: skip
    """Dev metrics of one GGUF served by llama.cpp, in the `autodata eval` loop; also seconds spent."""
    embedded = EmbeddedModelSettings(gguf=gguf, alias="proxy-student", n_threads=os.cpu_count() or 1)  # nothing else runs
    endpoint = EndpointSettings(model="proxy-student", max_tokens=settings.max_tokens_per_turn, temperature=0.0,
                                json_mode="json_object")  # fmt: skip
    loop = LoopSettings(max_turns=settings.max_turns, max_tokens_per_turn=settings.max_tokens_per_turn)
    started = time.monotonic()
    with EmbeddedServer(gguf, embedded, log_file=log_file) as server:
        client = RoleClient("student", endpoint, base_url=server.base_url, api_key="none",
                            limiter=AdaptiveLimiter(1), ledger=UsageLedger())  # fmt: skip
        metrics = evaluate(items, out, client=client, retriever=retriever, loop=loop)
        usage = client.ledger.summary().get("student", {})
        client.close()
    seconds = time.monotonic() - started
    metrics["generated_tokens"] = usage.get("completion_tokens", 0)
    return metrics, seconds


def run_proxy(data_dir: Path, out: Path, *, dev_items: list[SeedItem], retriever: Retriever, cache_dir: Path,
              embedded_gguf: Path, student: Path | None = None, settings: ProxySettings = ProxySettings(),
              baseline_file: Path | None = None) -> dict:  # fmt: skip
    """Train, convert, score base and tuned student; write and return `out/proxy.json`.

    `baseline_file`: where the untuned student's dev metrics are kept for this world,
    student and evaluation (see `run_proxy_in`); when it exists they are read, not recomputed.
    """
    examples = load_examples(data_dir)
    folder, gguf_file = resolve_student(student, embedded_gguf)
    if not dev_items:
        raise ProxyTrainingFailed("The dev subset is empty.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    load = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **load)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **load).to(device)

    items = dev_items[: settings.dev_limit]
    cached = json.loads(baseline_file.read_text(encoding="utf-8")) if baseline_file and baseline_file.is_file() else None
    if cached is None:  # the untuned student, scored once per world, student and evaluation
        base_gguf = to_gguf(model, tokenizer, out / "base-hf", out / "base.gguf", cache_dir)
    tuned, losses, train_stats = train_lora(model, tokenizer, examples, settings, device)
    tuned_gguf = to_gguf(tuned, tokenizer, out / "tuned-hf", out / "tuned.gguf", cache_dir)
    for folder_name in ("base-hf", "tuned-hf"):
        shutil.rmtree(out / folder_name, ignore_errors=True)

    if cached is None:
        base, base_s = score_gguf(base_gguf, items, out / "eval-base", retriever, settings, out / "llama-base.log")
        if baseline_file:
            atomic_write_json(baseline_file, {"metrics": base, "seconds": base_s})
    else:
        base, base_s = cached["metrics"], 0.0
    tuned_m, tuned_s = score_gguf(tuned_gguf, items, out / "eval-tuned", retriever, settings, out / "llama-tuned.log")
    result = {
        "dev_em": tuned_m["em"], "base_dev_em": base["em"],
        "dev_subem": tuned_m["subem"], "base_dev_subem": base["subem"],
        "dev_f1": tuned_m["f1"], "base_dev_f1": base["f1"],
        "format_valid": round(1 - tuned_m["invalid_format_rate"], 6),
        "base_format_valid": round(1 - base["invalid_format_rate"], 6),
        "train_loss": losses,
        "score_metric": settings.score_metric,
        "dev_n": len(items),
        "baseline_cached": cached is not None,
        "train_examples": len(examples),
        "device": device,
        **train_stats,
        "eval_seconds": round(base_s + tuned_s, 2),
        "eval_generated_tokens_per_s": round(((0 if cached else base["generated_tokens"]) + tuned_m["generated_tokens"])
                                             / max(base_s + tuned_s, 1e-9), 1),  # fmt: skip
        "settings": asdict(settings),
    }  # fmt: skip
    metric_key = {"em": "dev_em", "subem": "dev_subem", "f1": "dev_f1", "format_valid": "format_valid"}
    result["score"] = result[metric_key[settings.score_metric]]
    atomic_write_json(out / "proxy.json", result)
    return result


def run_proxy_in(workspace, data_dir: Path, out: Path, *, student: Path | None = None,
                 settings: ProxySettings = ProxySettings()) -> dict:  # fmt: skip
    """`run_proxy` on a `Workspace`'s world: its dev split, its retriever, the embedded student by default."""
    load_examples(data_dir)  # a clear error before anything else starts
    dev = workspace.world.items("dev")
    student_path = Path(student or workspace.embedded_gguf).resolve()
    stat = student_path.stat()
    key = hashlib.sha256(json.dumps({
        "world": workspace.world.fingerprint, "retriever": workspace.settings.retriever.model_dump(mode="json"),
        "student": [str(student_path), stat.st_size, stat.st_mtime_ns], "dev": [i.id for i in dev[: settings.dev_limit]],
        "eval": [settings.max_turns, settings.max_tokens_per_turn],
    }, sort_keys=True).encode()).hexdigest()[:16]  # fmt: skip
    return run_proxy(Path(data_dir), Path(out), dev_items=dev, retriever=workspace.retriever,
                     cache_dir=workspace.settings.cache_dir, embedded_gguf=workspace.embedded_gguf, student=student,
                     settings=settings, baseline_file=workspace.settings.cache_dir / "proxy-baselines" / f"{key}.json")  # fmt: skip
