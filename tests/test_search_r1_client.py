"""Search-R1's training loop against our server: its request/response handling, reimplemented.

`SearchR1Loop` follows `search_r1/llm_agent/generation.py` (`_batch_search`,
`_passages2string`, `execute_predictions`) from its public request schema and observed
behaviour, not its code: one POST of every active rollout's query per step, no status
check, `response.json()['result']` read unconditionally, passages rendered as
`Doc {i}(Title: {title}) {text}` and wrapped in `<information>`.
"""

import re

import httpx
import pytest

from autodata.search import format_hits
from autodata.search.protocol import Hit
from autodata.trajectory import observation_text
from tests.conftest import FACTS


class SearchR1Loop:
    def __init__(self, search_url: str, topk: int | None = 3):
        self.search_url, self.topk = search_url, topk

    def _batch_search(self, queries: list[str], **extra) -> dict:
        payload = {"queries": queries, "topk": self.topk, "return_scores": True, **extra}
        return httpx.post(self.search_url, json=payload, timeout=60).json()  # no status check, like requests.post

    @staticmethod
    def _passages2string(retrieval_result: list[dict]) -> str:
        reference = ""
        for idx, doc_item in enumerate(retrieval_result):
            lines = doc_item["document"]["contents"].split("\n")
            reference += f"Doc {idx + 1}(Title: {lines[0]}) {chr(10).join(lines[1:])}\n"
        return reference

    def batch_search(self, queries: list[str], **extra) -> list[str]:
        return [self._passages2string(r) for r in self._batch_search(queries, **extra)["result"]]

    def execute_predictions(self, predictions: list[str]) -> list[str]:
        """The observation each rollout gets; rollouts that answered get ''."""
        searches = [p.split("<search>")[1].split("</search>")[0].strip() for p in predictions if "<search>" in p]
        results = self.batch_search(searches)  # an empty list when no rollout searched
        assert len(results) == len(searches)
        return [
            f"\n\n<information>{results.pop(0).strip()}</information>\n\n" if "<search>" in p else ""
            for p in predictions
        ]


def search_r1_prompt(question: str) -> str:
    """Search-R1's first user turn: `process_fn` and `make_prefix` of scripts/data_process/nq_search.py
    (template 'base'), copied verbatim from its repository (the same text is in its infer.py)."""
    example = {"question": question}
    example["question"] = example["question"].strip()
    if example["question"][-1] != "?":
        example["question"] += "?"
    question = example["question"]
    prefix = f"""Answer the given question. \
You must conduct reasoning inside <think> and </think> first every time you get new information. \
After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. \
You can search as many times as your want. \
If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"""
    return prefix


@pytest.mark.parametrize(
    "question",
    ["who wrote hamlet", "Who wrote Hamlet?", "  when did the titanic sink \n", "what is 2+2 ?", "naïve café — où?"],
)
def test_the_first_user_turn_is_search_r1s_byte_for_byte(question):
    from autodata.trajectory import inference_prompt

    assert inference_prompt(question) == search_r1_prompt(question)


@pytest.fixture
def loop(retriever_server):
    return SearchR1Loop(retriever_server.url + "/retrieve")


def alive(server) -> bool:
    return httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_a_step_where_no_rollout_searched(loop, retriever_server):
    assert loop.execute_predictions(["<answer> Paris </answer>", "<answer> 1912 </answer>"]) == ["", ""]
    assert loop._batch_search([]) == {"result": []}
    assert alive(retriever_server)


def test_a_grpo_sized_batch_in_one_request(loop, retriever_server):
    """train_batch_size 512 x n_agent 5: 2,560 queries in one POST."""
    queries = [
        f"{q} {i}"
        for i in range(512)
        for q in ("who wrote hamlet", "capital of France", "titanic", "chess", "penicillin")
    ]
    assert len(queries) == 2560
    results = loop.batch_search(queries)
    assert len(results) == 2560 and all(r.startswith("Doc 1(Title: ") for r in results)
    assert results[0].startswith('Doc 1(Title: "Hamlet") ')
    assert alive(retriever_server)


def test_too_many_queries_get_a_clear_413(retriever_server):
    response = httpx.post(retriever_server.url + "/retrieve", json={"queries": ["x"] * 100_000}, timeout=60)
    assert response.status_code == 413 and "at most 65536" in response.json()["error"]
    assert alive(retriever_server)


BROAD = "the largest river in the world first capital"  # topk 10,000 returns just the passages it matches
MATCHING = sum(bool(re.search(r"\b(largest|river|world|first|capital)\b", f"{t} {x}".lower())) for t, x in FACTS)


@pytest.mark.parametrize("topk, expected", [(None, 3), (0, 3), (-1, 3), (5, 5), (10_000, MATCHING)])
def test_topk_as_search_r1_reads_it(retriever_server, topk, expected):
    loop = SearchR1Loop(retriever_server.url + "/retrieve", topk=topk)
    assert len(loop._batch_search([BROAD])["result"][0]) == expected
    body = {"queries": [BROAD], "return_scores": True}  # topk left out entirely
    assert len(httpx.post(retriever_server.url + "/retrieve", json=body).json()["result"][0]) == 3


def test_unknown_fields_are_ignored_and_empty_queries_find_nothing(loop, retriever_server):
    result = loop._batch_search(["who wrote hamlet", "", "the of"], docs=[], rerank=True)["result"]
    assert result[0][0]["document"]["contents"].startswith('"Hamlet"') and result[1] == [] and result[2] == []
    assert loop.execute_predictions(["<search>  </search>"]) == ["\n\n<information></information>\n\n"]
    assert alive(retriever_server)


def test_our_observations_equal_search_r1s_passages2string(loop, bm25_index):
    queries = ["who wrote hamlet", "largest river", "Nobel prize", "capital of Japan", "ship iceberg"]
    theirs = loop.batch_search(queries)
    ours = [observation_text(hits) for hits in bm25_index.search(queries, topk=3)]
    assert ours == theirs
    multi_line = [Hit(id="9", contents='"T"\nline one\nline two')]  # text keeps its inner newlines
    assert format_hits(multi_line) == SearchR1Loop._passages2string(
        [{"document": {"contents": '"T"\nline one\nline two'}}]
    )


def test_a_recipe_may_cut_observations_by_the_students_tokens(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from autodata.errors import RecipeError
    from autodata.recipe import Recipe

    hits = [Hit(id=str(i), contents=f'"{title}"\n{text}') for i, (title, text) in enumerate(FACTS[:3])]
    words = sorted(set(__import__("re").findall(r"\w+|[^\w\s]", format_hits(hits))))
    core = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
        ]
    )
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(tmp_path / "student")

    recipe = Recipe().with_changes(
        search={
            **Recipe().search.model_dump(),
            "max_observation_tokens": 16,
            "observation_tokenizer": str(tmp_path / "student"),
        }
    )
    cut = observation_text(hits, recipe.search.max_observation_tokens, recipe.search.observation_tokenizer)
    assert cut.split()[:2] == ["Doc", "1"] and "Hamlet" in cut and "Paris" not in cut  # 16 tokens: part of Doc 1
    assert observation_text(hits, 10_000, str(tmp_path / "student")) == format_hits(hits)  # short enough: untouched
    with pytest.raises(RecipeError, match="set observation_tokenizer"):
        Recipe().with_changes(search={**Recipe().search.model_dump(), "max_observation_tokens": 16})
    with pytest.raises(RecipeError, match="does not exist"):
        observation_text(hits, 16, str(tmp_path / "nowhere"))
