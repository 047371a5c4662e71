"""Shared fixtures: a 20-passage corpus, its BM25 index, and a real server on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autodata.search import BM25Index
from autodata.search.server import BackgroundServer, create_app, free_port  # noqa: F401

# Hand-written passages with unambiguous answers: "query -> expected title" tests hold.
FACTS = [
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600, set in Denmark."),
    ("Paris", "Paris is the capital and largest city of France, on the river Seine."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("Python (programming language)", "Python is a programming language created by Guido van Rossum in 1991."),
    ("Photosynthesis", "Photosynthesis is the process by which green plants convert light into chemical energy."),
    ("Amazon River", "The Amazon River in South America is the largest river by discharge volume of water."),
    ("Marie Curie", "Marie Curie was a physicist and chemist who won two Nobel Prizes, for physics and chemistry."),
    ("Great Wall of China", "The Great Wall of China is a series of fortifications built across northern China."),
    ("Moby-Dick", "Moby-Dick is an 1851 novel by Herman Melville about the whaling captain Ahab."),
    ("Tokyo", "Tokyo is the capital of Japan and the most populous metropolitan area in the world."),
    ("Penicillin", "Penicillin was discovered in 1928 by Alexander Fleming at St Mary's Hospital, London."),
    ("Beethoven", "Ludwig van Beethoven was a German composer; his Ninth Symphony ends with the Ode to Joy."),
    ("Apollo 11", "Apollo 11 landed the first humans, Neil Armstrong and Buzz Aldrin, on the Moon in 1969."),
    ("Sahara", "The Sahara is the largest hot desert in the world, covering much of North Africa."),
    ("Leonardo da Vinci", "Leonardo da Vinci painted the Mona Lisa and The Last Supper in Renaissance Italy."),
    ("DNA", "DNA is a molecule carrying genetic instructions, its double helix described by Watson and Crick."),
    ("Olympic Games", "The modern Olympic Games were first held in Athens in 1896."),
    ("Jupiter", "Jupiter is the fifth planet from the Sun and the largest in the Solar System."),
    ("Titanic", "RMS Titanic sank in the North Atlantic Ocean in April 1912 after striking an iceberg."),
    ("Chess", "Chess is a board game for two players played on a checkered board of 64 squares."),
]


# Questions whose answers FACTS states: seeds for throughput runs (bench.synthesis, the Ray tests).
ANSWERABLE = [
    ("who wrote the tragedy hamlet", "William Shakespeare"),
    ("who discovered penicillin", "Alexander Fleming"),
    ("which planet is the largest in the solar system", "Jupiter"),
    ("who painted the mona lisa", "Leonardo da Vinci"),
    ("when did the rms titanic sink", "1912"),
    ("who created the python programming language", "Guido van Rossum"),
]


def write_corpus(path: Path, facts=FACTS) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n" for i, (title, text) in enumerate(facts)
        )
    return path


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch, tmp_path):
    """No test sees the developer's AUTODATA_* settings or writes to their home folder."""
    for name in list(os.environ):
        if name.startswith("AUTODATA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


@pytest.fixture(scope="session")
def bm25_index(corpus_file, tmp_path_factory) -> BM25Index:
    return BM25Index.build(corpus_file, tmp_path_factory.mktemp("index") / "idx", show_progress=False)


@pytest.fixture(scope="session")
def retriever_server(bm25_index):
    with BackgroundServer(create_app(bm25_index, documents=len(bm25_index))) as server:
        yield server


def point_roles_at(monkeypatch, url: str, model: str = "fake") -> None:
    """Every role's endpoint set to `url` through the AUTODATA_ROLES__* variables, as a user would."""
    from autodata.settings import ROLE_NAMES

    for role in ROLE_NAMES:
        monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__BASE_URL", url)
        monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__MODEL", model)


@pytest.fixture
def scripted_roles(monkeypatch, tmp_path, corpus_file):
    """All roles served by the scripted OpenAI-compatible server on loopback, in a world on the test
    corpus (AUTODATA_WORLD). Yields the ScriptedAgents, whose knobs a test may turn."""
    from tests.fakes.agents import ScriptedAgents
    from tests.fakes.openai_server import ScriptedOpenAI

    monkeypatch.setenv("AUTODATA_WORLD", str(make_world(tmp_path / "scripted-world", corpus_file)))
    agents = ScriptedAgents()
    with ScriptedOpenAI(reply=agents) as fake:
        point_roles_at(monkeypatch, fake.url)
        yield agents


STUDY_TRAIN = [
    ("t1", "who wrote the tragedy hamlet", "William Shakespeare"),
    ("t2", "who discovered penicillin", "Alexander Fleming"),
    ("t3", "who painted the mona lisa", "Leonardo da Vinci"),
]


CONFIRM = (
    ("c1", "what is the capital of france", "Paris"),
    ("c2", "which is the highest mountain on earth", "Mount Everest"),
    ("c3", "who wrote moby dick", "Herman Melville"),
)


def make_world(
    folder: Path,
    corpus: Path,
    train=None,
    dev=(("d1", "capital of japan", "Tokyo"),),
    test=(("x1", "where is the sahara"),),
    confirm=CONFIRM,
) -> Path:
    """A world made as a user makes one: seed files written, then `autodata world create`'s code."""
    from autodata.seeds import SeedItem, write_seeds
    from autodata.world import create_world

    train = STUDY_TRAIN if train is None else train
    files = folder.with_name(folder.name + "-files")
    write_seeds(files / "train.jsonl", [SeedItem(id=i, question=q, golden_answers=[a]) for i, q, a in train])
    write_seeds(files / "dev.jsonl", [SeedItem(id=i, question=q, golden_answers=[a]) for i, q, a in dev])
    write_seeds(files / "test.jsonl", [SeedItem(id=i, question=q) for i, q in test], with_answers=False)
    given = {}
    if confirm:
        write_seeds(files / "confirm.jsonl", [SeedItem(id=i, question=q, golden_answers=[a]) for i, q, a in confirm])
        given["confirm"] = files / "confirm.jsonl"
    create_world(
        folder,
        train=files / "train.jsonl",
        dev=files / "dev.jsonl",
        test=files / "test.jsonl",
        corpus=corpus,
        show_progress=False,
        **given,
    )
    return folder


@pytest.fixture
def study_world(tmp_path, scripted_roles) -> Path:
    """A three-seed world of the user's own files on the test corpus, with scripted roles, named by
    AUTODATA_WORLD; yields the home folder (created, as any earlier command would have)."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return tmp_path / "home"


from evals.recipe_score import acceptance_scorer  # noqa: F401  (a real, cheap scorer: the proxy is slow)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(words: list[str]):
    """A word-level ChatML tokenizer built offline (unknown words share one id)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"<\|im_start\|>|<\|im_end\|>|\w+|[^\w\s]"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="[UNK]")
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A randomly initialised one-layer Llama with a word-level tokenizer over the test corpus and the
    search agent's prompt, saved as a Hugging Face folder: the proxy's student in fast tests."""
    import re

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prompts import load_prompt

    text = " ".join(
        [
            load_prompt("search_agent"),
            "think search answer information Doc Title",
            *(f"{t} {x}" for t, x in FACTS),
            *(q + " " + a for q, a in ANSWERABLE),
        ]
    )
    tokenizer = tiny_tokenizer(sorted(set(re.findall(r"\w+|[^\w\s]", text))))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    folder = tmp_path_factory.mktemp("tiny-student")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
