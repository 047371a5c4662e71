"""The Search-R1 retriever wire protocol, shared by our server and our client.

    POST /retrieve {"queries": [...], "topk": 3, "return_scores": true}
    -> {"result": [[{"document": {"id", "contents"}, "score": 0.83}, ...], ...]}
    return_scores=false -> {"result": [[{"id", "contents"}, ...], ...]}

`contents` holds the title, quoted, on its first line and the text after it.
Inside autodata every hit is a `Hit`; the two wire forms exist only at the edge.

Requests are read the way Search-R1's own server reads them (its trainer is the client
that matters): unknown fields are ignored, `topk` missing, null or not positive means the
server's default, an empty `queries` list gets `{"result": []}`, and a batch of thousands
of queries (train batch x rollouts, 2,560 in its GRPO script) is one request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

DEFAULT_TOPK = 3
# Far above any training batch (Search-R1's GRPO script sends 2,560); a larger request is
# refused with HTTP 413 rather than held in memory.
MAX_QUERIES_PER_REQUEST = 65_536


class Passage(BaseModel):
    """One corpus entry. Servers may add fields (FlashRAG corpora carry `title`, `text`).

    Search-R1's BM25 server over a Lucene index that stores raw documents answers
    `{"title", "text", "contents"}` without an id (its trainer reads only `contents`); such a
    passage gets an id made from its contents, the same on every search.
    """

    model_config = ConfigDict(extra="allow")
    id: str
    contents: str

    @model_validator(mode="before")
    @classmethod
    def _id_from_contents(cls, value):
        if isinstance(value, dict) and "id" not in value and isinstance(value.get("contents"), str):
            digest = hashlib.sha256(value["contents"].encode("utf-8", "surrogatepass")).hexdigest()[:16]
            return {**value, "id": f"sha256:{digest}"}
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, value):
        return str(value) if isinstance(value, int) else value

    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0].strip().strip('"')


class ScoredPassage(BaseModel):
    document: Passage
    score: float


class SearchRequest(BaseModel):
    """`POST /retrieve`'s body, as Search-R1's server reads it (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")
    queries: list[str]
    topk: int | None = None  # None, 0 or negative: the server's default
    return_scores: bool = False


class SearchResponse(BaseModel):
    """Either wire form; pydantic picks the one that fits."""

    result: list[list[ScoredPassage]] | list[list[Passage]]

    def hits(self) -> list[list[Hit]]:
        return [
            [
                Hit(id=p.document.id, contents=p.document.contents, score=p.score)
                if isinstance(p, ScoredPassage)
                else Hit(id=p.id, contents=p.contents, score=None)
                for p in ranked
            ]
            for ranked in self.result
        ]


class Hit(BaseModel):
    """A retrieved passage, with its score when the retriever gave one."""

    model_config = ConfigDict(frozen=True)
    id: str
    contents: str
    score: float | None = None

    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0]

    @property
    def text(self) -> str:
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) > 1 else ""


def hits_to_wire(hits: list[list[Hit]], *, return_scores: bool) -> SearchResponse:
    if return_scores:
        return SearchResponse(
            result=[
                [ScoredPassage(document=Passage(id=h.id, contents=h.contents), score=h.score or 0.0) for h in ranked]
                for ranked in hits
            ]
        )
    return SearchResponse(result=[[Passage(id=h.id, contents=h.contents) for h in ranked] for ranked in hits])


def title_of(hit: Hit) -> str:
    """A hit's article title, without the quotes the corpus keeps around it."""
    return hit.title.strip().strip('"')


def article_name(title: str) -> str:
    """What a title names, without its disambiguation: "Python (programming language)" -> "Python"."""
    return re.sub(r"\s*\([^)]*\)$", "", title)


def format_hits(hits: Sequence[Hit]) -> str:
    """Render hits as Search-R1's `_passages2string` does inside <information>: `Doc i(Title: t) text`
    per hit, the title the first line of `contents` and the text all the rest, nothing cut."""
    return "".join(f"Doc {i}(Title: {hit.title}) {hit.text}\n" for i, hit in enumerate(hits, start=1))


class Retriever(Protocol):
    """What the rest of autodata needs from a retriever, local or remote."""

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        """Top-`topk` hits for each query, best first, in query order."""
        ...
