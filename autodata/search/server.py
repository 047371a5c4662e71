"""The Search-R1 compatible retriever server: `create_app(retriever)` builds it."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from autodata.search.protocol import (
    DEFAULT_TOPK,
    MAX_QUERIES_PER_REQUEST,
    Retriever,
    SearchRequest,
    SearchResponse,
    hits_to_wire,
)


def create_app(retriever: Retriever, *, documents: int | None = None, default_topk: int = DEFAULT_TOPK) -> FastAPI:
    """A FastAPI app serving `POST /retrieve` and `GET /health` over `retriever`.

    `topk` missing, null or not positive means `default_topk`; a `topk` above the corpus
    size (`documents`) is clamped to it.

    Example:
        >>> app = create_app(BM25Index.load("index/"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    app = FastAPI(title="autodata retriever", description="Search-R1 compatible BM25 retrieval.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in err.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "invalid request", "details": problems})

    @app.post("/retrieve", response_model=SearchResponse, responses={413: {"description": "too many queries"}})
    def retrieve(request: SearchRequest):
        # A plain `def`: FastAPI runs it in its thread pool, so BM25 never blocks the event loop.
        if len(request.queries) > MAX_QUERIES_PER_REQUEST:
            return JSONResponse(
                status_code=413,
                content={
                    "error": f"{len(request.queries)} queries in one request; at most {MAX_QUERIES_PER_REQUEST}. "
                    "Split the batch."
                },
            )
        topk = request.topk if request.topk and request.topk > 0 else default_topk
        if documents:
            topk = min(topk, documents)
        hits = retriever.search(request.queries, topk=topk) if request.queries else []
        return hits_to_wire(hits, return_scores=request.return_scores)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "documents": documents}

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """Run an ASGI app under uvicorn in a daemon thread on a free loopback port.

    Example:
        >>> with BackgroundServer(create_app(index)) as server:  # doctest: +SKIP
        ...     SearchClient(server.url).search(["who wrote hamlet"])
    """

    def __init__(self, app, *, host: str = "127.0.0.1", start_timeout_s: float = 10.0):
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._start_timeout_s = start_timeout_s
        config = uvicorn.Config(app, host=host, port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
