"""The quick SFT proxy: loss masking and input checks (fast), a real LoRA run (slow)."""

import json

import pytest

from autodata.errors import ProxyTrainingFailed
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, to_sharegpt
from evals.proxy import encode, fit_examples, load_examples, resolve_student

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny word-level ChatML tokenizer built offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "<|im_start|> <|im_end|> user assistant think search answer information who wrote hamlet Doc 1 Title it".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"<\|im_start\|>|<\|im_end\|>|\w+|[^\w\s]"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
    ])  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = CHATML
    return tok


def example():
    trajectory = Trajectory(question="who wrote hamlet", steps=[
        SearchStep(think="who wrote hamlet", query="hamlet", observation='Doc 1(Title: "Hamlet") information', hit_ids=["0"]),
        AnswerStep(think="it", answer="Shakespeare")])  # fmt: skip
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
    assert fitting == [] and stats == {"train_examples_drawn": 1, "train_examples_too_long": 1,
                                       "train_max_seq_tokens": len(ids) - 1,
                                       "train_longest_example_tokens": len(ids)}  # fmt: skip


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
        trajectory = Trajectory(question=item.question, steps=[
            SearchStep(think="I need to search for this.", query=item.question, observation=format_hits(hits),
                       hit_ids=[h.id for h in hits]),
            AnswerStep(think="The first document states it.", answer=item.golden_answers[0])])  # fmt: skip
        examples.append(to_sharegpt(trajectory))
    data = tmp_path / "data"
    data.mkdir()
    (data / "sft_dataset.json").write_text(json.dumps(examples))

    first = run_proxy(data, tmp_path / "p1", steps=40, dev_limit=8, settings=settings)
    assert first["format_valid"] > first["base_format_valid"]
    assert len(first["train_loss"]) == 40 and first["train_loss"][-1] < first["train_loss"][0]
    assert {"dev_em", "base_dev_em", "format_valid", "base_format_valid", "train_loss"} <= set(first)
    second = run_proxy(data, tmp_path / "p2", steps=40, dev_limit=8, settings=settings)
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
    assert main(["proxy", "--world", str(world), "--data", str(data), "--out", str(out), "--steps", "2",
                 "--dev-limit", "5", "--score-metric", "format_valid"]) == 0  # fmt: skip
    for folder in ("eval-base", "eval-tuned"):
        predictions = json.loads((out / folder / "predictions.json").read_text())
        assert [p["id"] for p in predictions] == ["own-dev-1", "own-dev-2"]
    assert main(["proxy", "--world", str(world), "--data", str(data), "--out", str(tmp_path / "again"), "--steps", "2",
                 "--dev-limit", "5", "--score-metric", "format_valid"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "again" / "proxy.json").read_text())["baseline_cached"]
    assert json.loads((out / "proxy.json").read_text())["dev_n"] == 2
