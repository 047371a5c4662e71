"""The demo world, built from small wheels shaped like the real packages."""

import io
import json
import zipfile

import pytest

from autodata.errors import WorldError
from autodata.search import BM25Index
from autodata.seeds import find_contamination, load_seeds
from autodata.world import (
    ANSERINI_JAR,
    NQ_MEMBERS,
    NQ_SOURCE,
    WIKI_MEMBER,
    WIKI_SOURCE,
    AnswerLocator,
    WorldPlan,
    build_world_from_wheels,
    parse_dpr_topics,
    with_detokenized_variants,
)

DPR_TEXT = (
    "who wrote hamlet\t['William Shakespeare']\n"
    '"who said ""to be or not to be"""\t[\'Hamlet\']\n'
    "who sang with reba\t['Linda Davis', \"Destiny 's Child\"]\n"
    "empty answers are skipped\t[]\n"
)


def test_dpr_topics_parse_csv_quoting_and_python_lists():
    items = parse_dpr_topics(DPR_TEXT, source="nq-dev")
    assert [i.id for i in items] == ["nq-dev-0", "nq-dev-1", "nq-dev-2"]
    assert items[1].question == 'who said "to be or not to be"'
    assert items[2].golden_answers == ["Linda Davis", "Destiny 's Child", "Destiny's Child"]
    assert items[0].metadata == {"source": "nq-dev"}


def test_dpr_topics_bad_rows_are_clear():
    with pytest.raises(WorldError, match="row 2: expected 2 tab-separated fields"):
        parse_dpr_topics("q\t['a']\njust a question\n", source="nq-dev")
    with pytest.raises(WorldError, match="row 1: answers are not a Python list"):
        parse_dpr_topics("q\t[oops\n", source="nq-dev")


def test_detokenized_variants_are_added_only_when_they_normalize_differently():
    assert with_detokenized_variants(["July 5 , 2018"]) == ["July 5 , 2018"]
    assert with_detokenized_variants(["McDonald 's", "Paris"]) == ["McDonald 's", "Paris", "McDonald's"]


def test_answer_locator_matches_whole_normalized_phrases():
    locator = AnswerLocator(['"A"\nThe Beatles were a band.', '"B"\nBeatlesque music.', '"C"\nWilliam III of England.'])
    assert locator.passages_with("the Beatles") == [0]
    assert locator.passages_with("William III") == [2]
    assert locator.passages_with("England, William") == []
    assert locator.passages_with("!!!") == []


# --- a whole world from fake wheels --------------------------------------------------------

TOPICS = ["Hamlet", "Paris", "Everest", "Python", "Amazon", "Curie", "Tokyo", "Fleming", "Apollo", "Sahara"]


def make_wheels(tmp_path):
    summaries = {
        t: {"title": t, "extract": f"{t} is topic {i}. Its keyword is kw{i} and its year is {1900 + i}."}
        for i, t in enumerate(TOPICS)
    }
    summaries["Empty"] = {"title": "Empty", "extract": ""}
    wiki = tmp_path / WIKI_SOURCE.filename
    with zipfile.ZipFile(wiki, "w") as z:
        z.writestr(WIKI_MEMBER, json.dumps(summaries))
    jar = io.BytesIO()
    with zipfile.ZipFile(jar, "w") as z:
        for source, member in NQ_MEMBERS.items():
            if source == "nq-dev":
                rows = [f"what is the keyword of {t}\t['kw{i}']" for i, t in enumerate(TOPICS)]
                rows += [f"what year is {t} from\t['{1900 + i}']" for i, t in enumerate(TOPICS)]
            else:  # worded differently, so the two sources share no 5-gram
                rows = [f"{t} keyword please\t['kw{i}']" for i, t in enumerate(TOPICS)]
                rows += [f"{t} has which year\t['{1900 + i}']" for i, t in enumerate(TOPICS)]
            rows += [f"an unanswerable question {i} ({source})\t['nowhere{i}']" for i in range(5)]
            rows += [rows[0]]  # an exact repeat: removed as a near duplicate
            z.writestr(member, "\n".join(rows) + "\n")
    nq = tmp_path / NQ_SOURCE.filename
    with zipfile.ZipFile(nq, "w") as z:
        z.writestr(ANSERINI_JAR, jar.getvalue())
    return {WIKI_SOURCE.name: wiki, NQ_SOURCE.name: nq}


def test_world_from_wheels(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    plan = WorldPlan(dev_size=8, test_size=8, confirm_size=6, split_seed=3)
    manifest = build_world_from_wheels(out, make_wheels(tmp_path), plan, plan.fingerprint(), show_progress=False)

    corpus = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == len(TOPICS) and manifest["corpus"]["skipped_empty_summaries"] == 1
    assert corpus[0] == {"id": "0", "contents": '"Hamlet"\nHamlet is topic 0. Its keyword is kw0 and its year is 1900.'}

    assert manifest["seeds"]["raw"]["nq-dev"] == {"questions": 26, "answer_in_corpus": 21}
    assert "2 dropped" in manifest["seeds"]["filters"][2]  # one exact repeat per source
    train, dev, confirm = (load_seeds(out / f"{split}.json") for split in ("train", "dev", "confirm"))
    test = load_seeds(out / "test.json", require_answers=False)
    answers = load_seeds(out / "private" / "test_answers.json")
    assert (len(dev), len(test)) == (8, 8) and all(i.golden_answers is None for i in test)
    assert [i.id for i in answers] == [i.id for i in test]
    assert all("answer_bm25_rank" not in i.metadata for i in test)  # derived from the answers: private
    assert all(i.metadata["answer_bm25_rank"] == 1 for i in dev)  # each answer sits in exactly one passage

    questions = [i.question for split in (train, dev, test, confirm) for i in split]
    assert len(questions) == len(set(questions))  # no question in two splits
    assert not find_contamination(train, dev + confirm + test) and not find_contamination(test, dev + confirm)
    assert not find_contamination(confirm, dev)
    assert not any("nowhere" in str(i.golden_answers) for i in train + dev + answers + confirm)
    assert manifest["seeds"]["splits"] == {"train": len(train), "dev": 8, "confirm": len(confirm), "test": 8}
    assert manifest["confirm"] == {"source": "carved from the shuffled questions", "size": len(confirm), "seed": 3}
    assert len(confirm) == 6 - manifest["seeds"]["contamination_removed"]["confirm_overlapping_dev"]
    assert "confirm.json" in manifest["files"]
    assert BM25Index.load(out / "index").search(["keyword of Tokyo"], topk=1)[0][0].title == '"Tokyo"'


def test_world_split_is_reproducible(tmp_path):
    wheels = make_wheels(tmp_path)
    plan = WorldPlan(dev_size=8, test_size=8, confirm_size=6, split_seed=3)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        build_world_from_wheels(tmp_path / name, wheels, plan, plan.fingerprint(), show_progress=False)
    for split in ("dev", "confirm"):
        assert (tmp_path / "a" / f"{split}.json").read_text() == (tmp_path / "b" / f"{split}.json").read_text()


def test_too_few_questions_is_a_clear_error(tmp_path):
    (tmp_path / "w").mkdir()
    plan = WorldPlan(dev_size=500, test_size=500)
    with pytest.raises(WorldError, match="too few for dev 500"):
        build_world_from_wheels(tmp_path / "w", make_wheels(tmp_path), plan, plan.fingerprint(), show_progress=False)
