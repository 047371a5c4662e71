"""Seed files: validation with file/record/problem, dedup, contamination."""

import json

import pytest

from autodata.errors import SeedDataError
from autodata.seeds import (
    SeedItem,
    find_contamination,
    find_near_duplicates,
    load_seeds,
    remove_near_duplicates,
    write_seeds,
)

GOOD = [
    {
        "id": "329",
        "question": "who was king of england in 1700",
        "golden_answers": ["William III of England", "William"],
    },
    {"id": 7, "question": "what is the capital of france", "golden_answers": ["Paris"], "metadata": {"source": "x"}},
]


def test_json_and_jsonl_load_the_same(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD) + "\n")
    from_json, from_jsonl = load_seeds(tmp_path / "a.json"), load_seeds(tmp_path / "a.jsonl")
    assert from_json == from_jsonl
    assert [i.id for i in from_json] == ["329", "7"]  # integer ids become strings
    assert from_json[1].metadata == {"source": "x"}


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"id": "1", "golden_answers": ["a"]}], "line 1: missing 'question'"),
        (
            [GOOD[0], {"id": "2", "question": "q", "golden_answers": []}],
            "line 2: 'golden_answers': golden_answers is empty",
        ),
        ([GOOD[0], GOOD[0]], "line 2: duplicate id '329' \\(first at line 1\\)"),
        ([{"id": "1", "question": "  ", "golden_answers": ["a"]}], "line 1: 'question': question is blank"),
        ([{"id": "1", "question": "q"}], "line 1: missing 'golden_answers'"),
        (
            [{"id": "1", "question": "q", "golden_answers": "Paris"}],
            "line 1: 'golden_answers': Input should be a valid list",
        ),
        ([["not", "an", "object"]], "line 1: expected an object"),
    ],
)
def test_bad_jsonl_records_name_file_line_and_problem(tmp_path, records, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(SeedDataError, match=f"seeds.jsonl.*{message}"):
        load_seeds(path)


def test_bad_json_list_names_the_record_index(tmp_path):
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps([GOOD[0], {"id": "2", "question": "q", "golden_answers": []}]))
    with pytest.raises(SeedDataError, match="record 1: 'golden_answers'"):
        load_seeds(path)


def test_not_json_names_the_line(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{oops\n")
    with pytest.raises(SeedDataError, match="seeds.jsonl, line 2: not JSON"):
        load_seeds(path)
    path = tmp_path / "seeds.json"
    path.write_text('[\n{"id": "1",\n "question": }\n]')
    with pytest.raises(SeedDataError, match="seeds.json, line 3: not JSON"):
        load_seeds(path)


def test_every_problem_is_listed_and_missing_or_empty_files_are_errors(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "question": ""}) + "\n" for i in range(12)))
    with pytest.raises(SeedDataError, match="12 bad record.*line 1: 'question': question is blank") as err:
        load_seeds(path)
    assert "line 10:" in str(err.value) and "line 11:" not in str(err.value) and "(and 2 more)" in str(err.value)
    with pytest.raises(SeedDataError, match="does not exist"):
        load_seeds(tmp_path / "nope.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(SeedDataError, match="empty"):
        load_seeds(tmp_path / "empty.json")


def test_test_files_may_omit_answers_and_round_trip(tmp_path):
    items = load_seeds_from(tmp_path, GOOD)
    write_seeds(tmp_path / "test.json", items, with_answers=False)
    hidden = load_seeds(tmp_path / "test.json", require_answers=False)
    assert [i.golden_answers for i in hidden] == [None, None]
    assert [i.question for i in hidden] == [i.question for i in items]


def load_seeds_from(tmp_path, records):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records))
    return load_seeds(path)


def item(i, question):
    return SeedItem(id=str(i), question=question, golden_answers=["x"])


def test_near_duplicates_find_rewordings_but_not_different_questions():
    items = [
        item(0, "who played the joker in the dark knight"),
        item(1, "Who played the Joker in The Dark Knight?"),  # same after normalization
        item(2, "who played the joker in the dark knight rises"),
        item(3, "who directed the dark knight"),
        item(4, "who played the riddler in the batman"),
    ]
    pairs = find_near_duplicates(items, threshold=0.8)
    assert [(a, b) for a, b, _ in pairs] == [("0", "1"), ("0", "2"), ("1", "2")]
    kept, dropped = remove_near_duplicates(items, threshold=0.8)
    assert [i.id for i in kept] == ["0", "3", "4"]
    assert len(dropped) == 3


def test_near_duplicates_agree_with_brute_force():
    import random

    from autodata.seeds import _shingles

    rng = random.Random(1)
    vocabulary = [
        "who",
        "what",
        "when",
        "where",
        "is",
        "was",
        "the",
        "king",
        "queen",
        "of",
        "france",
        "spain",
        "england",
        "first",
        "last",
        "born",
    ]
    items = [item(i, " ".join(rng.choices(vocabulary, k=rng.randint(3, 7)))) for i in range(150)]
    for threshold in (0.5, 0.8):
        sets = [_shingles(i.question) for i in items]
        expected = {
            (items[a].id, items[b].id)
            for a in range(len(items))
            for b in range(a + 1, len(items))
            if len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold
        }
        assert {(a, b) for a, b, _ in find_near_duplicates(items, threshold=threshold)} == expected


def test_contamination_flags_shared_ngrams_only():
    train = [
        item("t1", "who sings the theme song for the proud family"),
        item("t2", "who wrote the novel moby dick"),
        item("t3", "when was the eiffel tower built"),
        item("t4", "capital of peru"),
    ]
    held_out = [item("d1", "who sings the theme song for the proud family show"), item("d2", "capital of peru")]
    found = {f["id"]: f for f in find_contamination(train, held_out, n=5, min_overlap=0.5)}
    assert set(found) == {"t1", "t4"}
    assert found["t1"]["held_out_id"] == "d1" and found["t1"]["overlap"] == 1.0
    assert found["t4"]["overlap"] == 1.0  # shorter than n: the whole question is the gram
