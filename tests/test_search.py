"""One contract for the in-process index and the HTTP client, plus the server's edges."""

import json

import httpx
import pytest

from autodata.errors import CorpusError, SearchUnavailable
from autodata.search import BM25Index, SearchClient, format_hits, read_corpus
from autodata.search.protocol import Hit
from autodata.search.server import BackgroundServer, free_port
from tests.conftest import FACTS, write_corpus


@pytest.fixture(params=["in-process", "http"])
def retriever(request, bm25_index, retriever_server):
    if request.param == "in-process":
        yield bm25_index
    else:
        with SearchClient(retriever_server.url, batch_size=2) as client:
            yield client


KNOWN = [
    ("who wrote hamlet", "Hamlet", "William Shakespeare"),
    ("capital of France", "Paris", "Paris"),
    ("who discovered penicillin", "Penicillin", "Alexander Fleming"),
    ("first humans on the moon", "Apollo 11", "Neil Armstrong"),
    ("largest hot desert", "Sahara", "Sahara"),
]


def test_known_questions_return_passages_with_their_answers(retriever):
    results = retriever.search([q for q, _, _ in KNOWN], topk=3)
    assert len(results) == len(KNOWN)  # batch_size=2 over HTTP: three requests, order kept
    for (query, title, answer), hits in zip(KNOWN, results):
        assert 1 <= len(hits) <= 3
        assert hits[0].title == f'"{title}"', query
        assert answer in hits[0].contents
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_only_matching_passages_come_back_fewer_than_topk_when_few_match(retriever):
    """As Search-R1's BM25 server: no unrelated zero-score passages pad a short result list."""
    hits = retriever.search(["river"], topk=50)[0]
    assert sorted(h.title for h in hits) == ['"Amazon River"', '"Paris"'] and all(h.score > 0 for h in hits)
    assert [h.title for h in retriever.search(["whaling"], topk=5)[0]] == ['"Moby-Dick"']


def test_queries_without_a_known_word_get_no_hits(retriever):
    """As Search-R1's BM25 server: an empty query matches nothing (no zero-score filler)."""
    assert retriever.search(["zzzqqq xxyyzz", "", "the of and", "   "], topk=2) == [[], [], [], []]
    partly = retriever.search(["zzzqqq hamlet"], topk=2)[0]  # one known word: ranked as usual
    assert partly[0].title == '"Hamlet"'


def test_in_process_and_http_agree(bm25_index, retriever_server):
    queries = [q for q, _, _ in KNOWN] + ["ocean liner iceberg", "board game squares"]
    with SearchClient(retriever_server.url) as client:
        assert client.search(queries, topk=4) == bm25_index.search(queries, topk=4)


def test_format_hits_matches_search_r1():
    hits = [Hit(id="1", contents='"Paris"\nParis is the capital.'), Hit(id="2", contents='"Lyon"\nLyon is big.')]
    assert format_hits(hits) == 'Doc 1(Title: "Paris") Paris is the capital.\nDoc 2(Title: "Lyon") Lyon is big.\n'


# --- the server's wire format ----------------------------------------------------------


def post(server, body, **kwargs):
    return httpx.post(server.url + "/retrieve", timeout=10, **({"json": body} if body is not None else {}), **kwargs)


def test_wire_with_scores(retriever_server):
    response = post(
        retriever_server, {"queries": ["who wrote hamlet", "capital of France"], "topk": 2, "return_scores": True}
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert len(result) == 2 and len(result[0]) == 2
    first = result[0][0]
    assert set(first) == {"document", "score"}
    assert first["document"] == {"id": "0", "contents": '"Hamlet"\n' + FACTS[0][1]}


def test_wire_without_scores_is_the_plain_form(retriever_server):
    response = post(retriever_server, {"queries": ["capital of France"], "topk": 1, "return_scores": False})
    assert response.json() == {"result": [[{"id": "1", "contents": '"Paris"\n' + FACTS[1][1]}]]}
    default = post(retriever_server, {"queries": ["the largest capital"]}).json()  # Search-R1 defaults
    assert len(default["result"][0]) == 3 and "id" in default["result"][0][0]


def test_health(retriever_server):
    assert httpx.get(retriever_server.url + "/health").json() == {"status": "ok", "documents": len(FACTS)}


@pytest.mark.parametrize(
    "body, content",
    [
        ({"queries": "not a list"}, None),
        ({"topk": 3}, None),
        ({"queries": [1, 2]}, None),
        ({"queries": ["x"], "topk": "many"}, None),
        (None, b"{not json"),
        (None, b""),
    ],
)
def test_malformed_requests_get_4xx_json(retriever_server, body, content):
    response = post(
        retriever_server,
        body,
        **({"content": content, "headers": {"content-type": "application/json"}} if content is not None else {}),
    )
    assert 400 <= response.status_code < 500
    payload = response.json()
    assert payload["error"] == "invalid request" and payload["details"]
    assert httpx.get(retriever_server.url + "/health").status_code == 200  # still alive


# --- the client's failure handling ------------------------------------------------------


def test_client_retries_429_and_5xx_then_succeeds():
    calls = []

    def handler(request):
        calls.append(json.loads(request.content))
        if len(calls) < 3:
            return httpx.Response(429 if len(calls) == 1 else 503)
        return httpx.Response(200, json={"result": [[{"id": "7", "contents": '"T"\nx'}]]})

    with SearchClient("http://retriever.test", transport=httpx.MockTransport(handler), backoff_s=0.001) as client:
        hits = client.search(["q"], topk=1)
    assert hits == [[Hit(id="7", contents='"T"\nx', score=None)]]
    assert len(calls) == 3 and calls[0] == {"queries": ["q"], "topk": 1, "return_scores": True}


def test_client_unreachable_server_fails_fast_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with SearchClient(url, max_retries=1, backoff_s=0.001, timeout_s=2) as client:
        with pytest.raises(SearchUnavailable, match=f"{url}/retrieve"):
            client.search(["q"])


def test_client_rejects_a_non_search_r1_answer():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"hits": []}))
    with SearchClient("http://retriever.test", transport=transport) as client:
        with pytest.raises(SearchUnavailable, match="not a Search-R1 response"):
            client.search(["q"])


def test_client_speaks_to_a_plain_search_r1_server_without_scores():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/retrieve")
    def retrieve(body: dict):  # a Search-R1 server that ignores return_scores
        return {"result": [[{"id": 0, "contents": '"A"\ntext', "title": "A"}] for _ in body["queries"]]}

    with BackgroundServer(app) as server, SearchClient(server.url + "/retrieve") as client:
        assert client.search(["a", "b"], topk=1) == [[Hit(id="0", contents='"A"\ntext')]] * 2


def test_client_gives_stable_ids_to_a_search_r1_bm25_server_over_stored_raw_documents():
    """Search-R1's BM25 server over a Lucene index built with --storeRaw answers title/text/contents
    and no id (its retrieval_server.py `_search`); the passage id is made from the contents."""
    from fastapi import FastAPI

    app = FastAPI()
    contents = ['"A"\nfirst text', '"B"\nsecond text']

    @app.post("/retrieve")
    def retrieve(body: dict):
        ranked = [{"title": c.split("\n")[0].strip('"'), "text": c.split("\n", 1)[1], "contents": c} for c in contents]
        return {"result": [[{"document": d, "score": 2.0 - i} for i, d in enumerate(ranked)] for _ in body["queries"]]}

    with BackgroundServer(app) as server, SearchClient(server.url + "/retrieve") as client:
        first, again = client.search(["a", "b"], topk=2)
    assert [h.contents for h in first] == contents and [h.score for h in first] == [2.0, 1.0]
    assert first == again and first[0].id != first[1].id and first[0].id.startswith("sha256:")


# --- building indexes -------------------------------------------------------------------


def test_index_round_trip_is_memory_mapped(bm25_index, corpus_file):
    reopened = BM25Index.load(bm25_index.folder)
    assert len(reopened) == len(FACTS)
    assert reopened.is_built_from(corpus_file)
    assert reopened.search(["Beethoven symphony"], topk=1)[0][0].id == "11"


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("{not json", "line 3: not JSON"),
        ('{"id": "9"}', "line 3: contents: Field required"),
        ('{"id": "0", "contents": "dup"}', "line 3: duplicate id '0'"),
        ('{"id": "9", "contents": "   "}', "line 3: empty 'contents'"),
    ],
)
def test_corrupt_corpus_line_is_a_clear_error_and_nothing_is_written(tmp_path, bad_line, problem):
    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS[:2])
    with open(corpus, "a") as f:
        f.write(bad_line + "\n")
    out = tmp_path / "index"
    with pytest.raises(CorpusError, match=problem):
        BM25Index.build(corpus, out, show_progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["corpus.jsonl"]


def test_missing_corpus_and_missing_index_are_clear(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        BM25Index.build(tmp_path / "nope.jsonl", tmp_path / "out", show_progress=False)
    with pytest.raises(CorpusError, match="not an autodata index"):
        BM25Index.load(tmp_path)


def test_rank_breaks_ties_by_row_and_ranks_only_matching_rows():
    import numpy as np

    from autodata.search.bm25 import rank

    scores = np.zeros(10)
    scores[[3, 5, 7, 9]] = [2.0, 1.0, 1.0, 1.0]
    rows = np.array([7, 3, 9, 5, 3])  # row 3 holds two query tokens
    assert rank(rows, scores, 2, max_repeats=2) == [(3, 2.0), (5, 1.0)]  # 5 beats 7 and 9 on the tie
    assert rank(rows, scores, 1, max_repeats=2) == [(3, 2.0)]
    assert rank(rows, scores, 6, max_repeats=2) == [(3, 2.0), (5, 1.0), (7, 1.0), (9, 1.0)]
    assert rank(np.array([], dtype=int), np.zeros(10), 2, max_repeats=1) == []


@pytest.mark.parametrize("shard_docs", [100_000, 3])
def test_sharded_index_agrees_with_bm25s_built_over_the_whole_corpus(corpus_file, tmp_path, shard_docs):
    """Our shard-and-merge build scores like bm25s indexing every passage at once (same tokenizer)."""
    import bm25s
    import Stemmer

    ours = BM25Index.build(corpus_file, tmp_path / "ours", show_progress=False, shard_docs=shard_docs)
    passages = list(read_corpus(corpus_file))
    stemmer = Stemmer.Stemmer("english")
    tokenize = lambda texts: bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    dense = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
    dense.index(tokenize([p.contents for p in passages]), show_progress=False)
    queries = [q for q, _, _ in KNOWN] + ["the largest", "Nobel prize physics chemistry", "in 1969 the"]
    rows, dense_scores = dense.retrieve(tokenize(queries), k=5, show_progress=False)
    for hits, expected_rows, expected in zip(ours.search(queries, topk=5), rows, dense_scores, strict=True):
        # bm25s pads with zero-score rows; we return only the passages that match
        scored = [(h.id, round(h.score, 4)) for h in hits]
        assert scored == [(passages[r].id, round(float(s), 4)) for r, s in zip(expected_rows, expected) if s > 0]
