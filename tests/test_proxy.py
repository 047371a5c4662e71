"""The quick SFT proxy: loss masking and input checks (fast), a real LoRA run (slow)."""

import json

import pytest

from autodata.errors import ProxyTrainingFailed
from autodata.search import format_hits
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, to_sharegpt
from evals.proxy import encode, fit_examples, load_examples, resolve_student
from tests.conftest import ANSWERABLE

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny word-level ChatML tokenizer built offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<|im_start|>",
        "<|im_end|>",
        "user",
        "assistant",
        "think",
        "search",
        "answer",
        "information",
        "who",
        "wrote",
        "hamlet",
        "Doc",
        "1",
        "Title",
        "it",
    ]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"<\|im_start\|>|<\|im_end\|>|\w+|[^\w\s]"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = CHATML
    return tok


def example():
    trajectory = Trajectory(
        question="who wrote hamlet",
        steps=[
            SearchStep(
                think="who wrote hamlet",
                query="hamlet",
                observation='Doc 1(Title: "Hamlet") information',
                hit_ids=["0"],
            ),
            AnswerStep(think="it", answer="Shakespeare"),
        ],
    )
    return to_sharegpt(trajectory)


def test_only_assistant_tokens_are_learned(tokenizer):
    ids, labels = encode(tokenizer, example())
    learned = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
    masked = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
    assert "search" in learned and "answer" in learned and "think" in learned
    assert "information" not in learned and "Doc" not in learned  # retrieved text is masked
    assert "information" in masked and "user" in masked  # as is the prompt side
    assert learned.count("<|im_end|>") == 2  # each assistant turn learns to stop
    assert [label for label in labels if label != -100] == [t for t, label in zip(ids, labels) if label != -100]


def test_examples_too_long_are_left_out_whole_and_counted(tokenizer):
    """A sequence cut before its answer turn would teach searching without answering."""
    ids, labels = encode(tokenizer, example())
    assert len(ids) == len(labels) and labels[-2] != -100  # the final answer turn is learned
    fitting, stats = fit_examples(tokenizer, [example(), example()], max_tokens=len(ids))
    assert fitting == [(ids, labels)] * 2 and stats["train_examples_too_long"] == 0
    fitting, stats = fit_examples(tokenizer, [example()], max_tokens=len(ids) - 1)
    assert fitting == [] and stats == {
        "train_examples_drawn": 1,
        "train_examples_too_long": 1,
        "train_max_seq_tokens": len(ids) - 1,
        "train_longest_example_tokens": len(ids),
    }


def test_bad_inputs_fail_before_training(tmp_path):
    with pytest.raises(ProxyTrainingFailed, match="does not exist"):
        load_examples(tmp_path)
    (tmp_path / "sft_dataset.json").write_text("[]")
    with pytest.raises(ProxyTrainingFailed, match="no accepted items"):
        load_examples(tmp_path)
    (tmp_path / "sft_dataset.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "x"}]}]))
    with pytest.raises(ProxyTrainingFailed, match="record 0: 1 turns: the count must be even"):
        load_examples(tmp_path)
    with pytest.raises(ProxyTrainingFailed, match="is not a model"):
        resolve_student(tmp_path, tmp_path / "x.gguf")


def test_cli_proxy_without_data_exits_1_before_loading_anything(tmp_path, capsys):
    from autodata.cli import main

    assert main(["proxy", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "p")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_real_proxy_raises_format_validity_and_is_reproducible(tmp_path, monkeypatch):
    """LoRA on trajectories over the demo world: the tuned student follows the format more."""
    from autodata.api import prepare_world, run_proxy
    from autodata.search import BM25Index, format_hits
    from autodata.seeds import load_seeds
    from autodata.settings import load_settings

    settings = load_settings()
    prepare_world(settings, show_progress=False)
    index = BM25Index.load(settings.index_dir)
    train = [i for i in load_seeds(settings.world_dir / "train.json") if i.metadata["answer_bm25_rank"] == 1][:40]
    examples = []
    for item in train:
        hits = index.search([item.question], topk=3)[0]
        trajectory = Trajectory(
            question=item.question,
            steps=[
                SearchStep(
                    think="I need to search for this.",
                    query=item.question,
                    observation=format_hits(hits),
                    hit_ids=[h.id for h in hits],
                ),
                AnswerStep(think="The first document states it.", answer=item.golden_answers[0]),
            ],
        )
        examples.append(to_sharegpt(trajectory))
    data = tmp_path / "data"
    data.mkdir()
    (data / "sft_dataset.json").write_text(json.dumps(examples))

    first = run_proxy(data, tmp_path / "p1", steps=40, dev_limit=8, score_metric="format_valid", settings=settings)
    assert first["format_valid"] > first["base_format_valid"]
    assert len(first["train_loss"]) == 40 and first["train_loss"][-1] < first["train_loss"][0]
    assert {"dev_em", "base_dev_em", "format_valid", "base_format_valid", "train_loss"} <= set(first)
    second = run_proxy(data, tmp_path / "p2", steps=40, dev_limit=8, score_metric="format_valid", settings=settings)
    assert not first["baseline_cached"] and second["baseline_cached"]  # the untuned student is scored once
    assert second["base_format_valid"] == first["base_format_valid"] and not (tmp_path / "p2" / "eval-base").exists()
    assert second["train_loss"] == first["train_loss"]
    assert second["format_valid"] == first["format_valid"] and second["dev_em"] == first["dev_em"]


@pytest.mark.slow
def test_proxy_scores_the_dev_split_of_the_world_it_is_given(tmp_path, corpus_file):
    """`autodata proxy --world DIR` evaluates on that world's dev questions, searching its index."""
    from autodata.cli import main
    from tests.conftest import make_world

    dev = [("own-dev-1", "who painted the mona lisa", "Leonardo da Vinci"), ("own-dev-2", "capital of japan", "Tokyo")]
    world = make_world(tmp_path / "own", corpus_file, dev=dev)
    data = tmp_path / "data"
    data.mkdir()
    (data / "sft_dataset.json").write_text(json.dumps([example()]))
    out = tmp_path / "proxy"
    assert (
        main(
            [
                "proxy",
                "--world",
                str(world),
                "--data",
                str(data),
                "--out",
                str(out),
                "--steps",
                "2",
                "--dev-limit",
                "5",
                "--score-metric",
                "format_valid",
            ]
        )
        == 0
    )
    for folder in ("eval-base", "eval-tuned-1"):
        predictions = json.loads((out / folder / "predictions.json").read_text())
        assert [p["id"] for p in predictions] == ["own-dev-1", "own-dev-2"]
    assert (
        main(
            [
                "proxy",
                "--world",
                str(world),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "again"),
                "--steps",
                "2",
                "--dev-limit",
                "5",
                "--score-metric",
                "format_valid",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "again" / "proxy.json").read_text())["baseline_cached"]
    assert json.loads((out / "proxy.json").read_text())["dev_n"] == 2


# --- the likelihood probe and the proxy on a tiny randomly initialised student ----------------------


def grounded_examples(retriever, pairs):
    """ShareGPT examples: a real search for each question, its observation, then `answer`."""
    hits = retriever.search([q for q, _ in pairs], topk=3)
    return [
        to_sharegpt(
            Trajectory(
                question=q,
                steps=[
                    SearchStep(
                        think="I need to search for this.",
                        query=q,
                        observation=format_hits(found),
                        hit_ids=[h.id for h in found],
                    ),
                    AnswerStep(think="The first document states it.", answer=a),
                ],
            )
        )
        for (q, a), found in zip(pairs, hits)
    ]


def write_dataset(folder, examples):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sft_dataset.json").write_text(json.dumps(examples))
    return folder


def test_the_probe_scores_only_the_gold_answer_step_after_a_real_search(tiny_student, bm25_index):
    from transformers import AutoTokenizer

    from autodata.seeds import SeedItem
    from autodata.trajectory import inference_prompt, render_information
    from evals.proxy import answer_span_tokens, make_probes, probe_conversation

    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    (probe,) = make_probes([SeedItem(id="d1", question="capital of japan", golden_answers=["Tokyo"])], bm25_index, 3)
    assert probe.observation == format_hits(bm25_index.search(["capital of japan"], topk=3)[0])
    messages = probe_conversation(probe, "Tokyo")
    assert messages[0]["content"] == inference_prompt("capital of japan")  # the inference prompt, verbatim
    assert messages[1]["content"].endswith("<search> capital of japan </search>")
    assert messages[2]["content"] == render_information(probe.observation)  # as in training and inference
    ids, positions = answer_span_tokens(tokenizer, messages)
    assert tokenizer.decode([ids[p] for p in positions]).replace(" ", "") == "<answer>Tokyo</answer>"
    assert positions == list(range(positions[0], positions[-1] + 1)) and positions[-1] < len(ids) - 1


def plain_logprob(model, tokenizer, probe, answer):
    """The definition, computed the plain way: the whole chat through the whole model."""
    import torch

    from evals.proxy import answer_span_tokens, probe_conversation

    ids, positions = answer_span_tokens(tokenizer, probe_conversation(probe, answer))
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    predicted = torch.log_softmax(logits[[p - 1 for p in positions]], dim=-1)
    return predicted.gather(1, torch.tensor([ids[p] for p in positions])[:, None]).mean().item()


def test_cached_prefixes_and_top_layers_give_the_plain_numbers_and_the_best_golden_answer_counts(tiny_student):
    """The fast path (shared prefix, untuned layers run once) against the definition, base and tuned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from evals.proxy import Probe, base_logprobs, shared_head, tokenize_probe, tuned_logprobs

    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    config = LlamaConfig.from_pretrained(tiny_student)
    config.num_hidden_layers = 3
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config).eval()  # three layers: one below the tuned two
    probes = [
        Probe("d1", "capital of japan", 'Doc 1(Title: "Tokyo") Tokyo is the capital of Japan.', ("Tokyo", "Denmark")),
        Probe("d2", "who wrote hamlet", 'Doc 1(Title: "Hamlet") Shakespeare wrote it.', ("Shakespeare",)),
    ]
    tokens = [tokenize_probe(tokenizer, probe) for probe in probes]
    assert shared_head(tokens) > 0  # the instruction before the question is run once for both
    base, states = base_logprobs(model, tokens, 1, "cpu")
    with torch.inference_mode():
        plain = [{a: plain_logprob(model, tokenizer, p, a) for a in p.golden_answers} for p in probes]
    assert plain[0]["Tokyo"] != plain[0]["Denmark"]
    assert base == pytest.approx([max(p.values()) for p in plain], abs=1e-4)
    tuned = get_peft_model(
        model,
        LoraConfig(
            r=4,
            target_modules=["q_proj", "v_proj"],
            layers_pattern="layers",
            layers_to_transform=[1, 2],
            init_lora_weights=False,
        ),
    )
    with torch.inference_mode():
        plain_tuned = [max(plain_logprob(tuned, tokenizer, p, a) for a in p.golden_answers) for p in probes]
    assert plain_tuned[0] != pytest.approx(max(plain[0].values()), abs=1e-3)  # the adapters change the numbers
    assert tuned_logprobs(tuned, tokens, states, 1, "cpu") == pytest.approx(plain_tuned, abs=1e-4)


def test_repeats_train_again_and_the_same_inputs_give_the_same_score(tmp_path, tiny_student, bm25_index):
    from autodata.seeds import SeedItem
    from evals.proxy import ProxySettings, run_proxy

    dev = [SeedItem(id=f"d{i}", question=q, golden_answers=[a]) for i, (q, a) in enumerate(ANSWERABLE)]
    data = write_dataset(tmp_path / "data", grounded_examples(bm25_index, ANSWERABLE))
    settings = ProxySettings(steps=3, repeats=2, dev_limit=10, learning_rate=1e-2)
    common = {
        "dev_items": dev,
        "retriever": bm25_index,
        "cache_dir": tmp_path,
        "embedded_gguf": tiny_student,
        "student": tiny_student,
        "settings": settings,
        "baseline_file": tmp_path / "base.json",
    }
    first = run_proxy(data, tmp_path / "p1", **common)
    assert first["score_metric"] == "likelihood" and first["repeats"] == 2 and first["dev_n"] == len(ANSWERABLE)
    assert [len(r) for r in first["per_question"]] == [len(ANSWERABLE)] * 2
    assert first["per_question"][0] != first["per_question"][1]  # another seed and order: not a replay
    interval = first["score_interval"]
    assert interval["low"] <= first["score"] <= interval["high"] and interval["repeats"] == 2
    assert first["score"] == pytest.approx(sum(map(sum, first["per_question"])) / (2 * len(ANSWERABLE)), abs=1e-5)
    assert len(first["train_loss"]) == 3 and not first["baseline_cached"] and "dev_em" not in first  # no generation
    second = run_proxy(data, tmp_path / "p2", **common)
    assert second["baseline_cached"] and second["per_question"] == first["per_question"]
    assert json.loads((tmp_path / "p2" / "proxy.json").read_text())["score"] == first["score"]


def test_the_likelihood_gain_prefers_data_whose_answers_the_evidence_supports(tmp_path, tiny_student, bm25_index):
    """The bench's planted pair in miniature: right answers against answers swapped between items."""
    from autodata.seeds import SeedItem
    from evals.intervals import paired_difference
    from evals.proxy import ProxySettings, run_proxy

    dev = [SeedItem(id=f"d{i}", question=q, golden_answers=[a]) for i, (q, a) in enumerate(ANSWERABLE)]
    swapped = [(q, ANSWERABLE[(i + 1) % len(ANSWERABLE)][1]) for i, (q, _) in enumerate(ANSWERABLE)]
    settings = ProxySettings(steps=24, dev_limit=10, learning_rate=1e-2)
    scores = {}
    for name, pairs in (("right", ANSWERABLE), ("swapped", swapped)):
        data = write_dataset(tmp_path / name, grounded_examples(bm25_index, pairs))
        scores[name] = run_proxy(
            data,
            tmp_path / f"{name}-proxy",
            dev_items=dev,
            retriever=bm25_index,
            cache_dir=tmp_path,
            embedded_gguf=tiny_student,
            student=tiny_student,
            settings=settings,
        )["per_question"]
    assert paired_difference(scores["right"], scores["swapped"]).above_zero


def test_a_time_bound_fails_the_run_instead_of_measuring_fewer_steps(tmp_path, tiny_student, bm25_index):
    from autodata.seeds import SeedItem
    from evals.proxy import ProxySettings, run_proxy

    data = write_dataset(tmp_path / "data", grounded_examples(bm25_index, ANSWERABLE))
    with pytest.raises(ProxyTrainingFailed, match=r"time bound \(0 s\) after 1 of 5 steps"):
        run_proxy(
            data,
            tmp_path / "p",
            dev_items=[SeedItem(id="d", question="capital of japan", golden_answers=["Tokyo"])],
            retriever=bm25_index,
            cache_dir=tmp_path,
            embedded_gguf=tiny_student,
            student=tiny_student,
            settings=ProxySettings(steps=5, max_train_seconds=0.0),
        )
