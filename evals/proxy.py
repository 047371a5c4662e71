"""The quick SFT proxy: LoRA-tune a small student on a recipe's data, then score it on dev.

Steps: load the student (the embedded SmolLM2 GGUF, dequantized, or a local Hugging
Face folder); build training sequences from `sft_dataset.json` with the student's chat
template, with loss only on the assistant's own tokens (prompt and retrieved
`<information>` turns are masked); LoRA for a fixed number of steps at a fixed seed
(a time bound, when set, fails the run loudly instead of measuring fewer steps).

The default score is the *likelihood gain*: for each dev question, the mean log-probability
per token of the gold answer step (`<answer> gold </answer>`, best over golden answers) at
the answer turn of the inference loop, after a real search for the question and its real
observation, all rendered by `autodata.trajectory` as in training and inference; tuned
minus untuned student, per question. No generation (about 2 minutes for the untuned pass over
100 questions with the 135M student on 2 cores, once; 40 s for a tuned one), and a signal where
the student is too small to answer exactly.

`score_metric` em/subem/f1/format_valid (or `generate=True`) also converts base and tuned
weights to GGUF with llama.cpp's converter (from the pinned llama-cpp-python sdist) and
runs the dev subset through the same loop as `autodata eval` on llama.cpp.

`repeats` trains R times with different seeds and example orders; the score's 95%
interval (`evals.intervals`) covers both the questions and the training noise. The
per-question numbers are kept so that trials of a study, and a candidate against
production, are compared pair by pair on the same questions.

CUDA and bf16 are used when a GPU is present.
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from autodata._io import atomic_write_json, folder_written_whole, read_jsonl
from autodata.errors import ProxyTrainingFailed
from autodata.llm.client import RoleClient
from autodata.llm.embedded import EmbeddedServer
from autodata.llm.limiter import AdaptiveLimiter
from autodata.llm.usage import UsageLedger
from autodata.packages import PackageSource, fetch_package
from autodata.search.protocol import Retriever
from autodata.seeds import SeedItem
from autodata.settings import EmbeddedModelSettings, EndpointSettings
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, observation_text, sharegpt_problems, to_messages
from evals.evaluate import LoopSettings, evaluate
from evals.intervals import mean_interval
from evals.metrics import score_answers
from evals.records import GENERATION_METRICS, ProxyResult, ScoreMetric

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
    """How the proxy trains and scores. Defaults: about 1.7 minutes per trial on 2 CPU cores (bench.proxy_signal)."""

    steps: int = 24  # optimizer steps, one example each: always all of them
    max_items: int = 64  # training examples drawn from the dataset
    max_seq_tokens: int = 1536  # whole examples only: longer ones are left out (and counted), never cut
    max_train_seconds: float | None = None  # past it the run fails (ProxyTrainingFailed); None: no bound
    learning_rate: float = 5e-4
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_layers: int = 8  # LoRA on the top layers only: training and scoring run the layers below once
    dev_limit: int = 100
    repeats: int = 1  # trainings with different seeds and example orders; the interval covers their spread
    max_turns: int = 3  # generation loop: up to 2 searches, then an answer
    max_tokens_per_turn: int = 96
    top_k: int = 3  # passages in the likelihood probe's observation (as in the inference loop)
    score_metric: ScoreMetric = "likelihood"
    generate: bool | None = None  # run the generation metrics too; None: only when the score needs them
    seed: int = 13

    @property
    def generates(self) -> bool:
        return self.generate if self.generate is not None else self.score_metric in GENERATION_METRICS


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
    messages = [
        {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
        for t in example["conversations"]
    ]
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
    return fitting, {
        "train_examples_drawn": len(encoded),
        "train_examples_too_long": len(encoded) - len(fitting),
        "train_max_seq_tokens": max_tokens,
        "train_longest_example_tokens": max(lengths, default=0),
    }


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
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix)
            and m.name[len(prefix) :].startswith(CONVERTER_MEMBERS)
            and (m.isfile() or m.isdir())
        ]
        for member in members:
            member.name = member.name[len(prefix) :]
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
    done = subprocess.run(
        [sys.executable, str(script), str(folder), "--outfile", str(out_file), "--outtype", "f16"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-8:])
        raise ProxyTrainingFailed(f"GGUF conversion of {folder} failed:\n{tail}")
    return out_file


def train_lora(
    model, tokenizer, examples: list[dict], settings: ProxySettings, device: str, *, repeat: int = 0
) -> tuple[object, list[float], dict]:
    """LoRA on `model` for exactly `settings.steps` steps; returns the PEFT model (unmerged), losses and stats.

    Repeat r draws its examples, their order and the adapter's initialisation from seed + r.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    seed = settings.seed + repeat
    rng = random.Random(seed)
    torch.manual_seed(seed)
    chosen = rng.sample(examples, min(settings.max_items, len(examples)))
    encoded, fit = fit_examples(tokenizer, chosen, settings.max_seq_tokens)
    if fit["train_examples_too_long"]:
        logger.warning(
            "proxy: %d of %d examples are longer than %d tokens and were left out",
            fit["train_examples_too_long"],
            len(chosen),
            settings.max_seq_tokens,
        )
    encoded = [(ids, labels) for ids, labels in encoded if any(label != -100 for label in labels)]
    if not encoded:
        raise ProxyTrainingFailed(
            f"No training example fits whole in max_seq_tokens={settings.max_seq_tokens} "
            f"(the longest has {fit['train_longest_example_tokens']} tokens)."
        )
    first = first_tuned_layer(model, settings)
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        layers_pattern="layers",
        layers_to_transform=list(range(first, model.config.num_hidden_layers)),
    )
    model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    losses, tokens, started = [], 0, time.monotonic()
    for step in tqdm(range(settings.steps), desc=f"LoRA training (repeat {repeat + 1})", unit=" step"):
        ids, labels = encoded[step % len(encoded)]
        batch = {"input_ids": torch.tensor([ids], device=device), "labels": torch.tensor([labels], device=device)}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        tokens += len(ids)
        elapsed = time.monotonic() - started
        if (
            settings.max_train_seconds is not None
            and elapsed > settings.max_train_seconds
            and step + 1 < settings.steps
        ):
            raise ProxyTrainingFailed(
                f"LoRA training passed its time bound ({settings.max_train_seconds:.0f} s) after "
                f"{step + 1} of {settings.steps} steps; the score would measure fewer steps, so "
                "none is given. Raise the bound or lower --proxy-steps."
            )
    model.eval()
    seconds = time.monotonic() - started
    return (
        model,
        losses,
        {
            "train_seconds": round(seconds, 2),
            "train_tokens": tokens,
            "train_tokens_per_s": round(tokens / seconds, 1),
            **fit,
        },
    )


# --- the likelihood probe ------------------------------------------------------------------

PROBE_SEARCH_THOUGHT = "I need to search for the answer to this question."
PROBE_ANSWER_THOUGHT = "The documents state the answer."


@dataclass(frozen=True)
class Probe:
    """One question at the answer turn of the inference loop: searched once, its real observation."""

    id: str
    question: str
    observation: str
    golden_answers: tuple[str, ...]


def make_probes(items: list[SeedItem], retriever: Retriever, top_k: int) -> list[Probe]:
    """Each question searched as itself, the hits rendered as the inference loop renders them."""
    results = retriever.search([item.question for item in items], topk=top_k)
    return [
        Probe(item.id, item.question, observation_text(hits), tuple(item.golden_answers))
        for item, hits in zip(items, results)
    ]


def probe_conversation(probe: Probe, answer: str) -> list[dict[str, str]]:
    """The chat up to and including the answer turn, rendered by the training/inference code."""
    trajectory = Trajectory(
        question=probe.question,
        steps=[
            SearchStep(think=PROBE_SEARCH_THOUGHT, query=probe.question, observation=probe.observation, hit_ids=[]),
            AnswerStep(think=PROBE_ANSWER_THOUGHT, answer=answer),
        ],
    )
    return to_messages(trajectory)


def answer_span_tokens(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat, and the positions of the final `<answer> .. </answer>` tokens."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    turn = messages[-1]["content"]
    end = full.rindex(turn) + len(turn)
    start = end - len(turn) + turn.index("<answer>")
    encoded = tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    positions = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > a >= start and b <= end]
    return encoded["input_ids"], positions


@dataclass(frozen=True)
class ProbeTokens:
    """A probe tokenized: the chat up to its answer step (shared by the golden answers), then per golden
    answer the rest of its input, where the answer-step tokens sit in it, and which tokens they are."""

    prefix: list[int]
    suffixes: list[list[int]]
    rows: list[list[int]]  # per golden answer: rows of the suffix's logits that predict the answer step
    targets: list[list[int]]


def tokenize_probe(tokenizer, probe: Probe) -> ProbeTokens:
    encoded = [answer_span_tokens(tokenizer, probe_conversation(probe, golden)) for golden in probe.golden_answers]
    # the token before the step predicts its first: the step's tokens stay out of the shared prefix
    shared = common_prefix([ids for ids, _ in encoded], min(positions[0] - 1 for _, positions in encoded))
    return ProbeTokens(
        encoded[0][0][:shared],
        [ids[shared : positions[-1]] for ids, positions in encoded],
        [[p - 1 - shared for p in positions] for _, positions in encoded],
        [[ids[p] for p in positions] for ids, positions in encoded],
    )


def _mean_logprob(logits, rows: list[int], targets: list[int]) -> float:
    import torch

    predicted = torch.log_softmax(logits[rows].float(), dim=-1)
    return predicted.gather(1, torch.tensor(targets, device=logits.device)[:, None]).mean().item()


def common_prefix(sequences: list[list[int]], limit: int) -> int:
    """How many leading items all `sequences` share, at most `limit`."""
    first, shared = sequences[0], max(limit, 0)
    for other in sequences[1:]:
        shared = next((i for i in range(shared) if other[i] != first[i]), shared)
    return shared


def shared_head(tokens: list[ProbeTokens]) -> int:
    """How many leading tokens every probe's prefix shares (the instruction before the question):
    they are run once for all probes. At least one token of each prefix is left to run per probe."""
    return common_prefix([probe.prefix for probe in tokens], min(len(probe.prefix) for probe in tokens) - 1)


def base_logprobs(model, tokens: list[ProbeTokens], first_tuned_layer: int, device: str) -> tuple[list[float], dict]:
    """The untuned student's score per probe (best golden answer), and its hidden states at the input of
    `first_tuned_layer` (the shared head once, then per probe the rest of its prefix and each suffix),
    from which `tuned_logprobs` runs only the tuned layers."""
    import copy

    import torch

    head = shared_head(tokens)
    scores, states = [], {"head": None, "probes": []}
    with torch.inference_mode():
        cache = None
        if head:
            out = model(input_ids=torch.tensor([tokens[0].prefix[:head]], device=device), **_STATES)
            states["head"], cache = out.hidden_states[first_tuned_layer][0].half().cpu(), out.past_key_values
        for probe in tqdm(tokens, desc="likelihood (untuned student)", unit=" q"):
            out = model(
                input_ids=torch.tensor([probe.prefix[head:]], device=device),
                past_key_values=copy.deepcopy(cache),
                **_STATES,
            )
            kept = {"prefix": out.hidden_states[first_tuned_layer][0].half().cpu(), "suffixes": []}
            best = None
            for suffix, rows, targets in zip(probe.suffixes, probe.rows, probe.targets):
                step = model(
                    input_ids=torch.tensor([suffix], device=device),
                    past_key_values=copy.deepcopy(out.past_key_values),
                    output_hidden_states=True,
                )
                kept["suffixes"].append(step.hidden_states[first_tuned_layer][0].half().cpu())
                value = _mean_logprob(step.logits[0], rows, targets)
                best = value if best is None else max(best, value)
            scores.append(round(best, 5))
            states["probes"].append(kept)
    return scores, states


_STATES = {"use_cache": True, "output_hidden_states": True, "logits_to_keep": 1}


def tuned_logprobs(
    model,
    tokens: list[ProbeTokens],
    states: dict,
    first_tuned_layer: int,
    device: str,
    desc: str = "likelihood (tuned student)",
) -> list[float]:
    """Per probe, the best golden answer's mean log-probability under `model`, whose layers below
    `first_tuned_layer` are the untuned student's: only the layers from there on are run."""
    import copy

    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = next(causal_lm.parameters()).dtype
    as_input = lambda hidden: hidden[None].to(device, dtype)
    scores = []
    with torch.inference_mode(), _only_layers_from(causal_lm, first_tuned_layer):
        cache = None
        if states["head"] is not None:
            cache = causal_lm(inputs_embeds=as_input(states["head"]), use_cache=True, logits_to_keep=1).past_key_values
        for probe, kept in tqdm(list(zip(tokens, states["probes"])), desc=desc, unit=" q"):
            out = causal_lm(
                inputs_embeds=as_input(kept["prefix"]),
                past_key_values=copy.deepcopy(cache),
                use_cache=True,
                logits_to_keep=1,
            )
            best = None
            for suffix_states, rows, targets in zip(kept["suffixes"], probe.rows, probe.targets):
                step = causal_lm(
                    inputs_embeds=as_input(suffix_states), past_key_values=copy.deepcopy(out.past_key_values)
                )
                value = _mean_logprob(step.logits[0], rows, targets)
                best = value if best is None else max(best, value)
            scores.append(round(best, 5))
    return scores


@contextmanager
def _only_layers_from(causal_lm, first: int):
    """The decoder runs its layers from `first` on, fed the hidden states that enter layer `first`;
    their cache slots are renumbered from 0 so the cache's length reads from the first of them."""
    import torch

    decoder = causal_lm.model
    layers = decoder.layers
    kept = list(layers)[first:]
    indexes = [layer.self_attn.layer_idx for layer in kept]
    decoder.layers = torch.nn.ModuleList(kept)
    for new, layer in enumerate(kept):
        layer.self_attn.layer_idx = new
    try:
        yield
    finally:
        decoder.layers = layers
        for layer, index in zip(kept, indexes):
            layer.self_attn.layer_idx = index


def first_tuned_layer(model, settings: ProxySettings) -> int:
    """The first layer LoRA adapts. Generation metrics need the answer format learned, which the top
    layers alone did not learn in 40 steps here (format validity stayed 0): then all layers are tuned."""
    if settings.generates:
        return 0
    return max(0, model.config.num_hidden_layers - settings.lora_layers)


# --- the proxy -----------------------------------------------------------------------------


def score_gguf(
    gguf: Path, items: list[SeedItem], out: Path, retriever: Retriever, settings: ProxySettings, log_file: Path
) -> tuple[dict, list[dict], float]:
    """Dev metrics of one GGUF served by llama.cpp in the `autodata eval` loop, per-question rows, seconds.

    `out` is emptied first: a new model must not resume an earlier model's answers."""
    shutil.rmtree(out, ignore_errors=True)
    cores = os.cpu_count() or 1  # nothing else runs
    embedded = EmbeddedModelSettings(gguf=gguf, alias="proxy-student", n_threads=cores, n_threads_batch=cores)
    endpoint = EndpointSettings(
        model="proxy-student", max_tokens=settings.max_tokens_per_turn, temperature=0.0, json_mode="json_object"
    )
    loop = LoopSettings(max_turns=settings.max_turns, max_tokens_per_turn=settings.max_tokens_per_turn)
    started = time.monotonic()
    with EmbeddedServer(gguf, embedded, log_file=log_file) as server:
        client = RoleClient(
            "student",
            endpoint,
            base_url=server.base_url,
            api_key="none",
            limiter=AdaptiveLimiter(1),
            ledger=UsageLedger(),
        )
        metrics = evaluate(items, out, client=client, retriever=retriever, loop=loop, show_progress=False)
        usage = client.ledger.summary().get("student", {})
        client.close()
    seconds = time.monotonic() - started
    metrics["generated_tokens"] = usage.get("completion_tokens", 0)
    return metrics, read_jsonl(out / "trajectories.jsonl"), seconds


def per_question_generation(items: list[SeedItem], rows: list[dict], metric: str) -> list[float]:
    """One generation metric per question, in the order of `items`."""
    by_id = {row["id"]: row for row in rows}
    if metric == "format_valid":
        return [float(by_id[item.id]["format_valid"]) for item in items]
    _, per_example = score_answers(
        [by_id[item.id]["answer"] for item in items], [item.golden_answers for item in items]
    )
    return per_example[metric]


def load_student(folder: Path, gguf_file: str | None, device: str, cache_dir: Path | None = None):
    """Tokenizer and model of the student. A GGUF student is dequantized once (about 45 s for the
    embedded model on 2 cores) and kept as a Hugging Face folder under `cache_dir` (loads in a second)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if gguf_file and cache_dir is not None:
        stat = (Path(folder) / gguf_file).stat()
        cached = Path(cache_dir) / "students" / f"{Path(gguf_file).stem}-{stat.st_size}-{stat.st_mtime_ns}"
        if not (cached / "config.json").is_file():
            tokenizer, model = load_student(folder, gguf_file, "cpu")
            model.hf_quantizer = None  # dequantized already; let it save
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            with folder_written_whole(cached) as staging:
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
        folder, gguf_file = cached, None
    load = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **load)
    return tokenizer, AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **load).to(device)


def run_proxy(
    data_dir: Path,
    out: Path,
    *,
    dev_items: list[SeedItem],
    retriever: Retriever,
    cache_dir: Path,
    embedded_gguf: Path,
    student: Path | None = None,
    settings: ProxySettings = ProxySettings(),
    baseline_file: Path | None = None,
) -> ProxyResult:
    """Train `settings.repeats` times, score base and tuned student; write and return `out/proxy.json`.

    `baseline_file`: where the untuned student's numbers are kept for this world, student
    and evaluation (see `run_proxy_in`); when it holds them they are read, not recomputed
    (the untuned student is deterministic; only training is repeated).
    """
    examples = load_examples(data_dir)
    folder, gguf_file = resolve_student(student, embedded_gguf)
    if not dev_items:
        raise ProxyTrainingFailed("The dev subset is empty.")
    if settings.repeats < 1 or settings.steps < 1:
        raise ProxyTrainingFailed("The proxy needs at least one repeat of at least one training step.")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = load_student(folder, gguf_file, device, cache_dir)
    items = dev_items[: settings.dev_limit]
    tokens = [tokenize_probe(tokenizer, probe) for probe in make_probes(items, retriever, settings.top_k)]
    first = first_tuned_layer(model, settings)
    cached, states = _read_baseline(baseline_file)
    was_cached = states is not None and (not settings.generates or "generation" in cached)
    started = time.monotonic()
    if states is None:
        cached["likelihood"], states = base_logprobs(model, tokens, first, device)
        _write_states(baseline_file, states)
    base_lp, likelihood_s = cached["likelihood"], time.monotonic() - started
    base_gen = cached.get("generation") if settings.generates else None
    if settings.generates and base_gen is None:
        base_gen = cached["generation"] = _generation(
            model, tokenizer, items, out, "base", retriever, settings, cache_dir
        )
    if baseline_file:
        atomic_write_json(baseline_file, cached)

    repeats = []
    for repeat in range(settings.repeats):
        tuned, losses, train_stats = train_lora(model, tokenizer, examples, settings, device, repeat=repeat)
        started = time.monotonic()
        tuned_lp = tuned_logprobs(tuned, tokens, states, first, device, desc=f"likelihood (repeat {repeat + 1})")
        likelihood_s += time.monotonic() - started
        generation = None
        if settings.generates:
            generation = _generation(
                tuned.merge_and_unload(), tokenizer, items, out, f"tuned-{repeat + 1}", retriever, settings, cache_dir
            )
            if repeat + 1 < settings.repeats:
                tokenizer, model = load_student(folder, gguf_file, device, cache_dir)  # merging changed the weights
        else:
            model = tuned.unload()  # the untuned student again: LoRA was never merged
        repeats.append({"likelihood": tuned_lp, "generation": generation, "train_loss": losses, **train_stats})
    result = _result(
        items,
        base_lp,
        base_gen,
        repeats,
        settings,
        baseline_cached=was_cached,
        likelihood_s=likelihood_s,
        device=device,
        train_examples=len(examples),
    )
    result.write(out / "proxy.json")
    return result


def _read_baseline(baseline_file: Path | None) -> tuple[dict, dict | None]:
    """The cached untuned numbers and hidden states (None when either is missing: both are recomputed)."""
    if baseline_file is None or not baseline_file.is_file():
        return {}, None
    import torch

    states_file = baseline_file.with_suffix(".states.pt")
    cached = json.loads(baseline_file.read_text(encoding="utf-8"))
    if "likelihood" not in cached or not states_file.is_file():
        return {}, None
    return cached, torch.load(states_file)


def _write_states(baseline_file: Path | None, states: dict) -> None:
    if baseline_file is None:
        return
    import torch

    target = baseline_file.with_suffix(".states.pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    torch.save(states, partial)
    os.replace(partial, target)


def _generation(model, tokenizer, items, out: Path, name: str, retriever, settings, cache_dir: Path) -> dict:
    """Generation metrics of `model` (converted to GGUF, served by llama.cpp) and its per-question rows."""
    gguf = to_gguf(model, tokenizer, out / f"{name}-hf", out / f"{name}.gguf", cache_dir)
    shutil.rmtree(out / f"{name}-hf", ignore_errors=True)
    metrics, rows, seconds = score_gguf(
        gguf, items, out / f"eval-{name}", retriever, settings, out / f"llama-{name}.log"
    )
    return {
        "metrics": metrics,
        "seconds": round(seconds, 2),
        "per_question": {m: per_question_generation(items, rows, m) for m in GENERATION_METRICS},
    }


def _result(
    items,
    base_lp,
    base_gen,
    repeats,
    settings: ProxySettings,
    *,
    baseline_cached: bool,
    likelihood_s: float,
    device: str,
    train_examples: int,
) -> ProxyResult:
    """proxy.json: the score, its per-question numbers per repeat and its interval, and every metric."""
    gains = [[round(t - b, 5) for t, b in zip(r["likelihood"], base_lp)] for r in repeats]
    by_metric = {"likelihood": gains}
    if base_gen is not None:
        by_metric |= {m: [r["generation"]["per_question"][m] for r in repeats] for m in GENERATION_METRICS}
    per_question = by_metric[settings.score_metric]
    interval = mean_interval(per_question)
    mean = lambda values: round(sum(values) / len(values), 6)
    generation = {}
    if base_gen is not None:
        tuned = [r["generation"]["metrics"] for r in repeats]
        for name, key in (("em", "dev_em"), ("subem", "dev_subem"), ("f1", "dev_f1")):
            generation[key], generation[f"base_{key}"] = mean([t[name] for t in tuned]), base_gen["metrics"][name]
        generation["format_valid"] = mean([1 - t["invalid_format_rate"] for t in tuned])
        generation["base_format_valid"] = round(1 - base_gen["metrics"]["invalid_format_rate"], 6)
        generation["eval_seconds"] = round(sum(r["generation"]["seconds"] for r in repeats), 2)
    return ProxyResult(
        score_metric=settings.score_metric,
        score=interval.mean,
        score_interval=interval.as_interval(),
        question_ids=[item.id for item in items],
        per_question=per_question,
        dev_n=len(items),
        per_question_by_metric=by_metric,
        repeats=len(repeats),
        likelihood_base=mean(base_lp),
        likelihood_tuned=mean([mean(r["likelihood"]) for r in repeats]),
        likelihood_gain=mean([mean(g) for g in gains]),
        likelihood_seconds=round(likelihood_s, 2),
        train_loss=repeats[0]["train_loss"],
        train_seconds=round(sum(r["train_seconds"] for r in repeats), 2),
        # the first repeat's statistics (tokens, examples drawn and too long)
        **{k: v for k, v in repeats[0].items() if k.startswith("train_") and k not in ("train_loss", "train_seconds")},
        baseline_cached=baseline_cached,
        device=device,
        settings=asdict(settings),
        **generation,
        train_examples=train_examples,
    )


def run_proxy_in(
    workspace,
    data_dir: Path,
    out: Path,
    *,
    student: Path | None = None,
    settings: ProxySettings = ProxySettings(),
    split: str = "dev",
) -> ProxyResult:
    """`run_proxy` on a `Workspace`'s world: its `split` (dev; `confirm` for promotion only), its retriever,
    the embedded student by default."""
    load_examples(data_dir)  # a clear error before anything else starts
    items = workspace.world.items(split)
    student = student or workspace.settings.student
    student_path = Path(student or workspace.embedded_gguf).resolve()
    stat = student_path.stat()
    key = hashlib.sha256(
        json.dumps(
            {
                "world": workspace.world.fingerprint,
                "retriever": workspace.settings.retriever.model_dump(mode="json"),
                "student": [str(student_path), stat.st_size, stat.st_mtime_ns],
                "questions": [i.id for i in items[: settings.dev_limit]],
                "eval": [
                    settings.max_turns,
                    settings.max_tokens_per_turn,
                    settings.top_k,
                    settings.lora_layers,
                    settings.generates,
                ],
                "probe": PROBE_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return run_proxy(
        Path(data_dir),
        Path(out),
        dev_items=items,
        retriever=workspace.retriever,
        cache_dir=workspace.settings.cache_dir,
        embedded_gguf=student_path,
        student=student_path,
        settings=settings,
        baseline_file=workspace.settings.cache_dir / "proxy-baselines" / f"{key}.json",
    )


PROBE_VERSION = 3  # bump when the probe's rendering changes: cached untuned numbers are then recomputed (2: the
# first user turn became Search-R1's make_prefix byte for byte, and search results lost their zero-score filler;
# 3: the states hold the probes' shared head once)
