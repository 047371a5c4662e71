"""Property-based tests (hypothesis) at the edges where outside input enters autodata.

Seed files, answer normalization and the metrics built on it, the Search-R1 retriever's
`POST /retrieve`, and recipe files. Offline and fast: the whole file runs in seconds.
Properties that once failed (a library fix followed) carry an explicit `@example` of what
broke, so that a regression fails every run.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from autodata.answers import exact_match, normalize_answer, sub_exact_match
from autodata.errors import RecipeError, SeedDataError
from autodata.recipe import Acceptance, Recipe, SearchRecipe, StrategyMix, load_recipe, parse_recipe
from autodata.search.protocol import DEFAULT_TOPK, MAX_QUERIES_PER_REQUEST
from autodata.search.server import create_app
from autodata.seeds import SeedItem, count_seeds, iter_seeds, load_seeds, write_seeds
from evals.metrics import f1_score
from tests.conftest import FACTS

# function_scoped_fixture: conftest's autouse `isolated_home` only sets environment variables,
# which every example may share; each example makes its own temporary folder.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that break naive writers and readers: line breaks JSON and YAML know of and
# Python's str.splitlines knows of, quotes, escapes, NUL, a BOM, emoji, JSON syntax.
TRICKY = "\n\r\t \"'\\\u2028\u2029\x85\x0b\x0c\x1c\x00\ufeff😀é中Σß{}[],:#&*!|>-?%@`"


def texts(max_size: int = 30, exclude: str = "") -> st.SearchStrategy[str]:
    """Any unicode (no lone surrogates), often biased towards TRICKY characters."""
    tricky = st.sampled_from([c for c in TRICKY if c not in exclude])
    return st.text(st.characters(codec="utf-8", exclude_characters=exclude), max_size=max_size) | st.text(
        tricky | st.characters(codec="utf-8", exclude_characters=exclude), max_size=max_size
    )


non_blank = texts().filter(lambda s: s.strip())
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts(max_size=15)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@contextmanager
def folder():
    """A fresh temporary folder per hypothesis example (tmp_path is shared by all examples)."""
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@contextmanager
def short_recursion_error():
    """Re-raise a RecursionError without its thousand frames, which pytest is slow to format."""
    try:
        yield
    except RecursionError as err:
        raise RecursionError(str(err)) from None


def mentions_line(message: str, line: int) -> bool:
    return re.search(rf"\bline {line}(?!\d)", message) is not None


# --- 1. seed files ------------------------------------------------------------------------


def seed_items_with(golden_answers: st.SearchStrategy) -> st.SearchStrategy[SeedItem]:
    return st.builds(
        SeedItem,
        id=texts().filter(len),
        question=non_blank,
        golden_answers=golden_answers,
        metadata=st.dictionaries(texts(max_size=10), json_values, max_size=2),
    )


answer_lists = st.lists(non_blank, min_size=1, max_size=3)
seed_items = seed_items_with(st.none() | answer_lists)
answered_items = seed_items_with(answer_lists)
seed_lists = st.lists(seed_items, min_size=1, max_size=6, unique_by=lambda item: item.id)


@FAST
@given(items=seed_lists, suffix=st.sampled_from([".json", ".jsonl"]))
def test_seed_files_round_trip_through_write_and_load(items, suffix):
    """write_seeds then load_seeds/count_seeds/iter_seeds gives the same items, in both formats,
    whatever unicode the fields hold; a file of either format loads under any other name too."""
    with folder() as where:
        path = where / f"seeds{suffix}"
        write_seeds(path, items)
        assert load_seeds(path, require_answers=False) == items
        assert count_seeds(path, require_answers=False) == len(items)
        assert list(iter_seeds(path, require_answers=False)) == items
        if all(item.golden_answers is not None for item in items):
            assert load_seeds(path) == items
        else:
            with pytest.raises(SeedDataError, match="missing 'golden_answers'") as raised:
                load_seeds(path)
            assert str(path) in str(raised.value)
        renamed = where / "seeds.txt"  # FlashRAG ships both formats under either name
        renamed.write_bytes(path.read_bytes())
        assert load_seeds(renamed, require_answers=False) == items

        write_seeds(path, items, with_answers=False)
        hidden = [item.model_copy(update={"golden_answers": None}) for item in items]
        assert load_seeds(path, require_answers=False) == hidden
        assert sorted(p.name for p in where.iterdir()) == sorted([path.name, "seeds.txt"])  # no temporary files


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_an_empty_seed_list_does_not_load(suffix):
    with folder() as where:
        path = where / f"seeds{suffix}"
        write_seeds(path, [])
        with pytest.raises(SeedDataError) as raised:
            load_seeds(path)
        assert str(path) in str(raised.value)


def _is_good_seed_line(line: str) -> bool:
    try:
        record = json.loads(line)
        return isinstance(record, dict) and SeedItem.model_validate(record).golden_answers is not None
    except ValueError:  # JSONDecodeError and pydantic's ValidationError
        return False


garbage_lines = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1, max_size=40),
    st.text(st.sampled_from(TRICKY.replace("\n", "").replace("\r", "")), min_size=1, max_size=10),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["id", "question", "golden_answers", "metadata"]), json_values).map(json.dumps),
    st.sampled_from(['{"id": "x"}', '{"id": "", "question": "q", "golden_answers": ["a"]}', "[]", "null", "{"]),
).filter(lambda line: line.strip() and not _is_good_seed_line(line))


@FAST
@given(items=st.lists(answered_items, min_size=1, max_size=5, unique_by=lambda i: i.id), data=st.data())
def test_a_garbage_line_in_jsonl_is_a_seed_data_error_naming_file_and_line(items, data):
    """One bad line among good ones: SeedDataError naming the file and that line, from every reader;
    never another exception, and nothing is written beside the file."""
    garbage = data.draw(garbage_lines, label="garbage")
    at = data.draw(st.integers(0, len(items)), label="at")
    lines = [json.dumps(item.to_json(), ensure_ascii=False) for item in items]
    lines.insert(at, garbage)
    with folder() as where:
        path = where / "seeds.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for read in (load_seeds, count_seeds, lambda p: list(iter_seeds(p))):
            with pytest.raises(SeedDataError) as raised:
                read(path)
            message = str(raised.value)
            assert str(path) in message and mentions_line(message, at + 1), message
        assert [p.name for p in where.iterdir()] == ["seeds.jsonl"]


@FAST
@given(items=st.lists(answered_items, min_size=1, max_size=4, unique_by=lambda i: i.id), data=st.data())
def test_a_truncated_json_list_is_a_seed_data_error_naming_file_and_line(items, data):
    with folder() as where:
        path = where / "seeds.json"
        write_seeds(path, items)
        text = path.read_text(encoding="utf-8")
        cut = data.draw(st.integers(1, text.rindex("]") - 1), label="cut")
        path.write_text(text[:cut], encoding="utf-8")
        with pytest.raises(SeedDataError) as raised:
            load_seeds(path)
        assert re.search(rf"^{re.escape(str(path))}, line \d+: not JSON", str(raised.value)), str(raised.value)


@FAST
@given(
    items=st.lists(seed_items, min_size=1, max_size=5, unique_by=lambda i: i.id),
    suffix=st.sampled_from([".json", ".jsonl"]),
    data=st.data(),
)
def test_a_failed_write_seeds_leaves_the_old_file_whole(items, suffix, data):
    """An item source that fails midway, or metadata JSON cannot hold: the old file stays as it
    was and no temporary file is left behind."""
    fail_at = data.draw(st.integers(0, len(items)), label="fail_at")
    unserializable = data.draw(st.booleans(), label="unserializable")

    def source():
        for i, item in enumerate(items):
            if i == fail_at and not unserializable:
                raise RuntimeError("the source broke")
            yield item.model_copy(update={"metadata": {"x": {1, 2}}}) if i == fail_at else item
        if fail_at == len(items):
            raise RuntimeError("the source broke")

    with folder() as where:
        path = where / f"seeds{suffix}"
        old = [SeedItem(id="old", question="q?", golden_answers=["a"])]
        write_seeds(path, old)
        before = path.read_bytes()
        with pytest.raises((RuntimeError, TypeError)):
            write_seeds(path, source())
        assert path.read_bytes() == before and load_seeds(path) == old
        assert [p.name for p in where.iterdir()] == [path.name]


def not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _assert_seed_data_error_names_line(path: Path, line: int) -> None:
    with pytest.raises(SeedDataError) as raised:
        load_seeds(path)
    assert str(path) in str(raised.value) and mentions_line(str(raised.value), line), str(raised.value)


@FEW
@given(bad=st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b and not_utf8(b)))
@example(bad=b"\xff")
def test_a_line_of_bytes_that_are_not_utf8_is_a_seed_data_error(bad):
    good = json.dumps({"id": "1", "question": "q?", "golden_answers": ["a"]}).encode()
    with folder() as where:
        path = where / "seeds.jsonl"
        path.write_bytes(good + b"\n" + bad + b"\n")
        _assert_seed_data_error_names_line(path, 2)


@FEW
@given(digits=st.integers(4301, 6000), suffix=st.sampled_from([".json", ".jsonl"]))
@example(digits=5000, suffix=".jsonl")
def test_an_integer_too_long_for_python_is_a_seed_data_error(digits, suffix):
    record = '{"id": ' + "1" * digits + ', "question": "q?", "golden_answers": ["a"]}'
    with folder() as where:
        path = where / f"seeds{suffix}"
        path.write_text(f"[\n{record}\n]\n" if suffix == ".json" else record + "\n", encoding="utf-8")
        _assert_seed_data_error_names_line(path, 2 if suffix == ".json" else 1)


@FEW
@given(depth=st.integers(2_000, 20_000), suffix=st.sampled_from([".json", ".jsonl"]))
@example(depth=100_000, suffix=".jsonl")
def test_deeply_nested_json_is_a_seed_data_error(depth, suffix):
    with folder() as where:
        path = where / f"seeds{suffix}"
        path.write_text("[" * depth + "\n", encoding="utf-8")
        with short_recursion_error():
            _assert_seed_data_error_names_line(path, 1)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, codec=None)


@FEW
@given(before=texts(5), surrogate=surrogates, after=texts(5))
@example(before="", surrogate="\ud800", after="")
def test_a_lone_surrogate_no_utf8_file_can_hold_is_refused_on_load(before, surrogate, after):
    """JSON allows \\uXXXX escapes of lone surrogates, which no UTF-8 file holds (write_seeds could not
    write them back): load_seeds refuses them, naming the record."""
    with folder() as where:
        given_file = where / "given.json"
        record = {"id": "1", "question": f"q{before}{surrogate}{after}", "golden_answers": ["a"]}
        given_file.write_text(json.dumps([record]), "utf-8")
        with pytest.raises(SeedDataError, match="record 0: .*lone surrogate"):
            load_seeds(given_file)


# --- 2. answer normalization and metrics --------------------------------------------------


def flashrag_normalize_answer(s: str) -> str:
    """FlashRAG's and Search-R1's normalize_answer, verbatim (REFERENCE.md section 1)."""

    def remove_articles(t):
        return re.sub(r"\b(a|an|the)\b", " ", t)

    def white_space_fix(t):
        return " ".join(t.split())

    def remove_punc(t):
        return "".join(ch for ch in t if ch not in set(string.punctuation))

    return white_space_fix(remove_articles(remove_punc(s.lower())))


answers = texts(max_size=40) | st.lists(
    st.sampled_from(["The", "a", "An", "the", "Paris", "paris", "1912", "yes", "no", "ΣΑΣ", "ß", "İ", "!", "."])
    | texts(max_size=6),
    max_size=8,
).map(" ".join)
golden_lists = st.lists(answers, max_size=4)
# Python's str.lower() is context-free except for a capital sigma at the end of a word, and
# FlashRAG lower-cases before it drops punctuation: keep sigma out where punctuation moves.
no_sigma = texts(max_size=30, exclude="\u03a3")


def ascii_swapcase(s: str) -> str:
    return "".join(c.swapcase() if c.isascii() else c for c in s)


@settings(max_examples=100, deadline=None)
@given(text=answers)
def test_normalize_is_flashrags_and_idempotent(text):
    normalized = normalize_answer(text)
    assert normalized == flashrag_normalize_answer(text)
    assert normalize_answer(normalized) == normalized
    assert normalized == " ".join(normalized.split())  # no outer, double or non-space whitespace
    assert not set(normalized) & set(string.punctuation)
    assert not {"a", "an", "the"} & set(normalized.split())


@settings(max_examples=100, deadline=None)
@given(text=no_sigma, data=st.data())
def test_normalize_ignores_ascii_case_punctuation_and_articles(text, data):
    """As FlashRAG defines them: ASCII case; ASCII punctuation anywhere (dropped before articles and
    whitespace are handled); the words a/an/the in any case between whitespace; extra whitespace."""
    expected = normalize_answer(text)
    assert normalize_answer(ascii_swapcase(text)) == expected
    assert normalize_answer(text.lower()) == expected

    punctuated = list(text)
    for _ in range(data.draw(st.integers(1, 5), label="marks")):
        at = data.draw(st.integers(0, len(punctuated)), label="at")
        punctuated.insert(at, data.draw(st.sampled_from(string.punctuation), label="mark"))
    assert normalize_answer("".join(punctuated)) == expected

    words = text.split()
    with_articles = []
    for word in words + [""]:
        article = data.draw(st.sampled_from(["", "a", "an", "the", "A", "An", "The", "THE", "tHe"]), label="article")
        with_articles += [article, word]
    spaces = data.draw(st.sampled_from([" ", "  ", "\t", "\n", " \u3000 "]), label="spaces")
    assert normalize_answer(spaces.join(with_articles)) == normalize_answer(" ".join(words)) == expected


@settings(max_examples=100, deadline=None)
@given(prediction=answers, golden=golden_lists, other=answers)
def test_exact_and_sub_exact_match(prediction, golden, other):
    em, subem = exact_match(prediction, golden), sub_exact_match(prediction, golden)
    assert em in (0.0, 1.0) and subem in (0.0, 1.0)
    assert em <= subem  # EM implies SubEM
    assert em == float(any(exact_match(prediction, [g]) for g in golden))
    assert subem == float(any(sub_exact_match(prediction, [g]) for g in golden))
    assert exact_match(prediction, [prediction]) == 1.0
    assert exact_match(prediction, golden + [prediction]) == 1.0
    assert exact_match(prediction, []) == sub_exact_match(prediction, []) == 0.0
    # EM is symmetric; SubEM both ways holds exactly when EM does
    assert exact_match(prediction, [other]) == exact_match(other, [prediction])
    both_ways = sub_exact_match(prediction, [other]) == sub_exact_match(other, [prediction]) == 1.0
    assert both_ways == (exact_match(prediction, [other]) == 1.0)
    # a golden answer said among other words is a SubEM hit, on either side
    assert sub_exact_match(f"{other} {prediction}", [prediction]) == 1.0
    assert sub_exact_match(f"{prediction} {other}", [prediction]) == 1.0


@settings(max_examples=100, deadline=None)
@given(prediction=answers, golden=st.lists(answers, min_size=1, max_size=3))
def test_regex_mode_em_implies_subem_and_literal_patterns_match(prediction, golden):
    patterns = [re.escape(g) for g in golden]
    assert exact_match(prediction, patterns, regex=True) <= sub_exact_match(prediction, patterns, regex=True)
    literal = [re.escape(normalize_answer(prediction))]
    assert exact_match(prediction, literal, regex=True) == sub_exact_match(prediction, literal, regex=True) == 1.0


@settings(max_examples=100, deadline=None)
@given(prediction=answers, golden=golden_lists, other=answers)
def test_f1_is_a_fraction_and_one_on_itself(prediction, golden, other):
    f1 = f1_score(prediction, golden)
    assert 0.0 <= f1 <= 1.0
    assert f1 == max([f1_score(prediction, [g]) for g in golden], default=0.0)
    assert f1_score(prediction, [other]) == pytest.approx(f1_score(other, [prediction]))
    if normalize_answer(prediction):
        assert f1_score(prediction, [prediction]) == 1.0
        assert f1_score(prediction, golden) == 1.0 or not exact_match(prediction, golden)
    else:
        assert f1 == 0.0  # nothing left to overlap


plain_words = st.text(string.ascii_lowercase, min_size=1, max_size=6).filter(
    lambda w: w not in ("a", "an", "the", "yes", "no", "noanswer")
)


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(plain_words, min_size=1, max_size=12, unique=True),
    data=st.data(),
    closed=st.sampled_from(["yes", "no", "noanswer", "Yes.", "NO!"]),
    other=answers,
)
def test_f1_is_the_token_overlap_harmonic_mean(words, data, closed, other):
    """Shared tokens S, prediction-only P, golden-only G (distinct words, any order or case):
    F1 = 2|S| / (2|S| + |P| + |G|); yes/no/noanswer get no partial credit."""
    shared = data.draw(st.integers(0, len(words)), label="shared")
    only_predicted = data.draw(st.integers(0, len(words) - shared), label="only_predicted")
    s, p, g = words[:shared], words[shared : shared + only_predicted], words[shared + only_predicted :]
    prediction = " ".join(data.draw(st.permutations(s + p), label="prediction order")).upper()
    golden = " ".join(data.draw(st.permutations(s + g), label="golden order"))
    expected = 2 * len(s) / (2 * len(s) + len(p) + len(g)) if s else 0.0
    assert f1_score(prediction, [golden]) == pytest.approx(expected)
    if normalize_answer(other) != normalize_answer(closed):
        assert f1_score(closed, [other]) == f1_score(other, [closed]) == 0.0


# --- 3. the Search-R1 retriever's requests --------------------------------------------------

CORPUS_IDS = {str(i) for i in range(len(FACTS))}
CORPUS_WORDS = sorted({w for title, text in FACTS for w in re.findall(r"\w+", f"{title} {text}")})


@pytest.fixture(scope="module")
def retriever_app(bm25_index):
    from fastapi.testclient import TestClient

    with TestClient(create_app(bm25_index, documents=len(bm25_index)), raise_server_exceptions=False) as client:
        yield client, bm25_index


queries = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=["Cs", "L", "P", "Zs", "So"]), max_size=20),  # lone surrogates too
    st.text(st.sampled_from(string.punctuation + " \t\n"), max_size=20),
    st.lists(st.sampled_from(CORPUS_WORDS + ["the", "of", "zzzqqq", "É", "😀"]), max_size=12).map(" ".join),
    st.tuples(st.lists(st.sampled_from(CORPUS_WORDS), min_size=1, max_size=4), st.integers(100, 1000)).map(
        lambda words_times: " ".join(words_times[0] * words_times[1])  # very long
    ),
    st.tuples(st.text(min_size=1, max_size=5), st.integers(1000, 20_000)).map(lambda t: t[0] * t[1]),
)
topks = st.none() | st.integers(-5, 30) | st.integers() | st.integers(2**63 - 2, 2**80) | st.integers(-(2**80), -1)


def post_json(client, body):
    """POST a body as JSON text with \\uXXXX escapes, so lone surrogates travel as JSON allows."""
    content = json.dumps(body, allow_nan=True).encode("utf-8")
    return client.post("/retrieve", content=content, headers={"content-type": "application/json"})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(queries, max_size=6),
    topk=st.just("absent") | topks,
    return_scores=st.just("absent") | st.booleans(),
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("queries", "topk", "return_scores")), json_values, max_size=2
    ),
)
def test_valid_retrieve_requests_get_one_ranked_list_per_query(retriever_app, batch, topk, return_scores, extra):
    client, index = retriever_app
    body = {"queries": batch, **extra}
    if topk != "absent":
        body["topk"] = topk
    if return_scores != "absent":
        body["return_scores"] = return_scores
    response = post_json(client, body)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    k = min(topk if isinstance(topk, int) and topk > 0 else DEFAULT_TOPK, len(FACTS))
    assert len(result) == len(batch)
    expected = index.search(batch, topk=k)
    for hits, want in zip(result, expected, strict=True):
        assert len(hits) <= k
        if return_scores is True:
            assert all(set(hit) == {"document", "score"} for hit in hits)
            assert [h["document"]["id"] for h in hits] == [w.id for w in want]
            scores = [h["score"] for h in hits]
            assert scores == sorted(scores, reverse=True)
        else:
            assert all(set(hit) == {"id", "contents"} for hit in hits)
            assert [h["id"] for h in hits] == [w.id for w in want]
        assert {h["document"]["id"] if "document" in h else h["id"] for h in hits} <= CORPUS_IDS


def _clearly_invalid(body) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list):
        return True
    if not all(isinstance(q, str) for q in body["queries"]):
        return True
    if isinstance(body.get("topk"), (list, dict)):
        return True
    return "return_scores" in body and isinstance(body["return_scores"], (list, dict, type(None)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=json_values
    | st.dictionaries(
        st.sampled_from(["queries", "topk", "return_scores", "other"]),
        json_values | st.lists(json_values, max_size=3) | st.floats(),
        max_size=4,
    )
)
@example(body={"queries": "not a list"})
@example(body={"queries": [1, 2]})
@example(body={"queries": ["x"], "topk": "many"})
@example(body={"queries": ["x"], "topk": float("nan")})
@example(body={"queries": ["x"], "topk": 2.5})
@example(body=[["x"]])
def test_any_json_body_gets_4xx_or_a_well_formed_answer_never_5xx(retriever_app, body):
    client, _ = retriever_app
    response = post_json(client, body)
    assert response.status_code < 500, (body, response.text)
    if _clearly_invalid(body):
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.json()["error"] == "invalid request"
    if response.status_code == 200:
        assert len(response.json()["result"]) == len(body["queries"])


def _is_json_object(content: bytes) -> bool:
    try:
        return isinstance(json.loads(content), dict)
    except (ValueError, RecursionError):
        return False


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
@example(content=b"")
@example(content=b"{not json")
@example(content=b"[" * 100_000)
@example(content=b'{"queries": ["x"], "topk": ' + b"1" * 5000 + b"}")
@example(content=b'{"queries": ["\xff"]}')
@example(content=b'{"queries": ["x"], "topk": 3}' * 2)
def test_a_body_that_is_not_a_json_request_gets_4xx(retriever_app, content):
    client, _ = retriever_app
    assume(not _is_json_object(content))  # an object may be a valid request
    response = client.post("/retrieve", content=content, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (content, response.text)


def test_too_many_queries_get_413(retriever_app):
    client, _ = retriever_app
    response = post_json(client, {"queries": [""] * (MAX_QUERIES_PER_REQUEST + 1)})
    assert response.status_code == 413 and "Split the batch" in response.json()["error"]


# --- 4. recipe files ------------------------------------------------------------------------

recipe_text = texts(max_size=40)
unit = st.floats(0, 1)
acceptances = st.builds(
    Acceptance,
    rule=recipe_text,
    attempts_per_solver=st.integers(1, 16),
    strong_min_accuracy=unit,
    weak_max_accuracy=st.floats(0, 1, exclude_min=True),
    min_gap=unit,
    early_stop=st.booleans(),
)
weights = st.floats(min_value=0)  # no upper bound: huge values and infinity are valid weights
strategy_mixes = (
    st.tuples(weights, weights, weights)
    .filter(lambda w: sum(w) > 0)
    .map(lambda w: StrategyMix(keep=w[0], rephrase=w[1], multi_hop=w[2]))
)
search_recipes = st.builds(
    SearchRecipe,
    top_k=st.integers(1, 50),
    max_turns=st.integers(1, 10),
    evidence_passages=st.integers(1, 20),
    max_observation_tokens=st.none(),
    observation_tokenizer=st.none() | recipe_text,
) | st.builds(
    SearchRecipe,
    top_k=st.integers(1, 50),
    max_turns=st.integers(1, 10),
    evidence_passages=st.integers(1, 20),
    max_observation_tokens=st.integers(16, 32_000),
    observation_tokenizer=recipe_text.filter(len),
)
recipes = st.builds(
    Recipe,
    name=recipe_text,
    instructions=st.fixed_dictionaries({"challenger": recipe_text, "tagger": recipe_text, "verifier": recipe_text}),
    acceptance=acceptances,
    max_rounds=st.integers(1, 10),
    strategies=strategy_mixes,
    search=search_recipes,
    weak_mode=st.sampled_from(["closed_book", "rag"]),
    hint_mode=st.sampled_from(["none", "titles", "answer"]),
    llm_judge=st.booleans(),
)
TOP_FIELDS = [name for name in Recipe.model_fields if name != "schema_version"]


@FAST
@given(recipe=recipes)
def test_recipes_round_trip_through_yaml_with_the_same_hash(recipe):
    back = parse_recipe(yaml.safe_load(recipe.to_yaml()), source="round trip")
    assert back == recipe and back.content_hash == recipe.content_hash
    with folder() as where:
        (where / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        assert load_recipe(where / "recipe.yaml") == recipe
    rebuilt = Recipe().with_changes(**{name: getattr(recipe, name) for name in TOP_FIELDS})
    assert rebuilt == recipe and rebuilt.content_hash == recipe.content_hash


@FAST
@given(recipe=recipes, name=recipe_text)
def test_the_hash_ignores_the_name_and_follows_the_content(recipe, name):
    assert recipe.with_changes(name=name).content_hash == recipe.content_hash
    other = recipe.with_changes(max_rounds=recipe.max_rounds % 10 + 1)
    assert other.content_hash != recipe.content_hash


@FEW
@given(recipe=recipes, text=texts(max_size=10).map(lambda s: s + "\x85"))
@example(recipe=Recipe(), text="a\x85\nb")
def test_recipe_text_with_a_next_line_character_round_trips(recipe, text):
    for changed in (
        recipe.with_changes(name=text),
        recipe.with_changes(instructions={**recipe.instructions, "tagger": text}),
    ):
        back = parse_recipe(yaml.safe_load(changed.to_yaml()), source="round trip")
        assert back == changed and back.content_hash == changed.content_hash


def _load_yaml_text(text: str):
    """load_recipe of a file holding `text`: the Recipe or the RecipeError; anything else propagates."""
    with folder() as where:
        path = where / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_recipe(path)
        except RecipeError as err:
            return err


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats()
    | texts(max_size=15, exclude="\x85")
    | st.dates()
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(max_size=10, exclude="\x85"), inner, max_size=3),
    max_leaves=4,
)
NESTED_FIELDS = {
    "acceptance": list(Acceptance.model_fields),
    "search": list(SearchRecipe.model_fields),
    "strategies": list(StrategyMix.model_fields),
    "instructions": ["challenger", "tagger", "verifier", "judge"],
}
recipe_like = st.dictionaries(
    st.sampled_from(TOP_FIELDS + ["schema_version"]) | texts(max_size=10),
    yaml_values
    | st.dictionaries(
        st.sampled_from(sorted({f for fs in NESTED_FIELDS.values() for f in fs})), yaml_values, max_size=4
    ),
    max_size=5,
)


@FAST
@given(data=recipe_like)
def test_any_yaml_mapping_is_a_recipe_or_a_recipe_error(data):
    """Unknown keys, wrong types, out-of-range numbers, anywhere: RecipeError naming each unknown
    key, or a valid Recipe; from a dict and from a YAML file alike."""
    try:
        direct = parse_recipe(data, source="test.yaml")
    except RecipeError as err:
        direct = err
    from_file = _load_yaml_text(yaml.safe_dump(data))
    assert type(from_file) is type(direct)
    if isinstance(direct, RecipeError):
        message = str(direct)
        assert message.startswith("Invalid recipe in test.yaml: "), message
        for key in set(data) - set(Recipe.model_fields):
            assert f"{key}: Extra inputs are not permitted" in message, message
    else:
        assert direct == from_file


out_of_range = {
    "max_rounds": st.integers(max_value=0) | st.integers(min_value=11),
    "acceptance.attempts_per_solver": st.integers(max_value=0) | st.integers(min_value=17),
    "acceptance.strong_min_accuracy": st.floats(max_value=-1e-9)
    | st.floats(min_value=1.000001)
    | st.just(float("nan")),
    "acceptance.weak_max_accuracy": st.floats(max_value=0) | st.floats(min_value=1.000001),
    "acceptance.min_gap": st.floats(max_value=-1e-9) | st.floats(min_value=1.000001),
    "search.top_k": st.integers(max_value=0) | st.integers(min_value=51),
    "search.max_turns": st.integers(max_value=0) | st.integers(min_value=11),
    "search.evidence_passages": st.integers(max_value=0) | st.integers(min_value=21),
    "strategies.keep": st.floats(max_value=-1e-9) | st.just(float("nan")),
}
wrong_type = st.lists(json_scalars, max_size=2) | st.dictionaries(texts(max_size=5), json_scalars, max_size=2)
wrong_types = {
    "name": wrong_type | st.integers() | st.booleans(),
    "max_rounds": wrong_type | st.none() | st.just("three"),
    "llm_judge": wrong_type | st.none() | st.just("maybe"),
    "hint_mode": wrong_type | texts(max_size=8).filter(lambda s: s not in ("none", "titles", "answer")),
    "weak_mode": wrong_type | st.just("open_book"),
    "output_format": st.just("alpaca") | wrong_type,
    "schema_version": st.integers().filter(lambda v: v != 1) | wrong_type,
    "instructions": wrong_type.filter(lambda v: not isinstance(v, dict)) | st.just({"challenger": "only one"}),
    "acceptance": st.lists(json_scalars, max_size=2) | texts(max_size=5),
    "acceptance.rule": wrong_type | st.integers(),
    "search.observation_tokenizer": wrong_type | st.integers(),
    "strategies.rephrase": wrong_type | st.just("lots"),
}


def _nested(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


BAD_VALUES = {
    field: out_of_range.get(field, st.nothing()) | wrong_types.get(field, st.nothing())
    for field in sorted({*out_of_range, *wrong_types})
}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), field=st.sampled_from(sorted(BAD_VALUES)))
def test_a_bad_field_is_a_recipe_error_that_names_it(data, field):
    """Out of range or of the wrong type, at the top or nested: RecipeError naming the dotted field,
    from parse_recipe, from a YAML file and from with_changes."""
    value = data.draw(BAD_VALUES[field], label="value")
    body = _nested(field, value)
    with pytest.raises(RecipeError) as raised:
        parse_recipe(body, source="bad.yaml")
    message = str(raised.value)
    assert message.startswith("Invalid recipe in bad.yaml: ") and field in message, message
    loaded = _load_yaml_text(yaml.safe_dump(body))
    assert isinstance(loaded, RecipeError) and field in str(loaded), str(loaded)
    with pytest.raises(RecipeError, match=re.escape(field)):
        Recipe().with_changes(**body)


@FAST
@given(key=texts(max_size=12).filter(lambda k: k and k not in Recipe.model_fields), value=yaml_values)
def test_an_unknown_field_is_a_recipe_error_that_names_it(key, value):
    with pytest.raises(RecipeError) as raised:
        parse_recipe({key: value, "max_rounds": 2}, source="x.yaml")
    assert f"{key}: Extra inputs are not permitted" in str(raised.value)


@FAST
@given(text=texts(max_size=80))
def test_any_text_file_is_a_recipe_or_a_recipe_error(text):
    outcome = _load_yaml_text(text)
    assert isinstance(outcome, (Recipe, RecipeError))


truthy_non_mappings = (st.lists(yaml_values, min_size=1, max_size=3) | yaml_scalars).filter(
    lambda v: v is not None and bool(v)
)


@FAST
@given(value=truthy_non_mappings)
def test_a_top_level_that_is_not_a_mapping_is_a_recipe_error(value):
    outcome = _load_yaml_text(yaml.safe_dump(value))
    assert isinstance(outcome, RecipeError) and "the top level must be a mapping" in str(outcome), outcome


@FEW
@given(value=st.sampled_from([[], 0, 0.0, False, ""]))
@example(value=[])
def test_a_falsy_top_level_that_is_not_a_mapping_is_a_recipe_error(value):
    outcome = _load_yaml_text(yaml.safe_dump(value))
    assert isinstance(outcome, RecipeError), f"{value!r} loaded as {outcome!r}"


@FEW
@given(
    prefix=st.sampled_from([b"", b"max_rounds: 2\nname: ", b"# "]),
    bad=st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"]),
)
@example(prefix=b"", bad=b"\xff")
def test_a_recipe_file_that_is_not_utf8_is_a_recipe_error(prefix, bad):
    with folder() as where:
        path = where / "recipe.yaml"
        path.write_bytes(prefix + bad + b"\n")
        with pytest.raises(RecipeError):
            load_recipe(path)


@FEW
@given(digits=st.integers(4301, 6000), field=st.sampled_from(["max_rounds", "name", "unknown"]))
@example(digits=5000, field="max_rounds")
def test_a_recipe_with_an_integer_too_long_for_python_is_a_recipe_error(digits, field):
    with folder() as where:
        path = where / "recipe.yaml"
        path.write_text(f"{field}: {'1' * digits}\n", encoding="utf-8")
        with pytest.raises(RecipeError):
            load_recipe(path)


@FEW
@given(depth=st.integers(1_000, 1_200), opener=st.sampled_from(["[", "{a: ", "- "]))
@example(depth=1_000, opener="[")
def test_a_deeply_nested_recipe_file_is_a_recipe_error(depth, opener):
    with folder() as where:
        path = where / "recipe.yaml"
        path.write_text(opener * depth + "x\n", encoding="utf-8")
        with pytest.raises(RecipeError), short_recursion_error():
            load_recipe(path)
