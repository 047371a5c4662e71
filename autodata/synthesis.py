"""The synthesis job: seeds in, a resumable output folder of verified trajectories out.

Folder layout (OUT):
    run.json           recipe hash, seeds checksum: a re-run must match them to resume
    recipe.yaml        the recipe used
    trajectories.jsonl accepted items, appended as each seed finishes
    rejected.jsonl     every rejected candidate with its reason
    progress.jsonl     one line per finished seed (with its LLM cost); resume skips these
    sft_dataset.json, dataset_info.json, midtrain.jsonl, manifest.json   (when all seeds are done)

The three JSONL files and manifest.json hold the records of `autodata.items`, and are
written and read only through those models.

A single writer (the main thread) appends whole seeds, so a crash or Ctrl-C loses at
most the seeds in flight; on resume, lines of unfinished seeds are dropped and those
seeds run again, replaying their cached LLM answers. Seed files are checked whole before
anything is written, then read one seed at a time (JSONL), so a file of millions of
seeds costs memory for its ids and the seeds in flight only.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from autodata._io import append_jsonl, atomic_write_json, atomic_write_jsonl, atomic_write_text, sha256_file
from autodata._version import __version__
from autodata.errors import RecipeError, SeedDataError
from autodata.export import write_datasets
from autodata.items import (
    AcceptedItem,
    ItemCounts,
    ProgressLine,
    QualityGates,
    Record,
    Rejection,
    RunManifest,
    SeedCounts,
    TargetOutcome,
)
from autodata.llm import LLMSession
from autodata.pipeline import SYNTHESIS_ROLES, SeedProcessor, SeedResult
from autodata.recipe import Recipe
from autodata.search.protocol import Retriever
from autodata.seeds import HeldOutQuestions, SeedItem, count_seeds, find_near_duplicates, iter_seeds

logger = logging.getLogger(__name__)

# The run folder's appended files, by the record a line holds.
RECORDS: dict[str, type[Record]] = {
    "trajectories.jsonl": AcceptedItem,
    "rejected.jsonl": Rejection,
    "progress.jsonl": ProgressLine,
}


@dataclass(frozen=True)
class SynthesisReport:
    out_dir: Path
    manifest: dict  # `run_manifest.record()`: what manifest.json holds
    seeds_run_now: int  # seeds processed in this invocation (the rest were already done)
    run_manifest: RunManifest | None = None


class _Output:
    """Append-only writer of one run folder, with resume."""

    def __init__(
        self, out: Path, recipe: Recipe, seeds_file: Path, recipe_source: str, fence: Callable[[], None] | None = None
    ):
        self.out = out
        self.fence = fence or (lambda: None)  # raises when this process may no longer write the folder
        self.run_info = {
            "recipe_hash": recipe.content_hash,
            "recipe_source": recipe_source,
            "seeds_file": str(seeds_file.resolve()),
            "seeds_sha256": sha256_file(seeds_file),
            "autodata_version": __version__,
        }
        self.recipe = recipe

    def open(self) -> set[str]:
        """Create or resume the folder; returns the ids of seeds already done."""
        self.fence()
        run_file = self.out / "run.json"
        if run_file.is_file():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            for key in ("recipe_hash", "seeds_sha256"):
                if previous.get(key) != self.run_info[key]:
                    raise RecipeError(
                        f"{self.out} holds a run with another {key.split('_')[0]} ({key}={previous.get(key)}, "
                        f"now {self.run_info[key]}). Use another --out folder, or delete this one to start over."
                    )
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_file, {**self.run_info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
            atomic_write_text(self.out / "recipe.yaml", self.recipe.to_yaml())
        done = {row.seed_id for row in ProgressLine.read(self.out / "progress.jsonl")}
        for name, record in RECORDS.items():
            # keep finished seeds' lines only: drops unfinished seeds and a torn last line (streamed)
            path = self.out / name
            rows = (row.model_dump() for row in record.read(path) if row.seed_id in done)
            atomic_write_jsonl(path, rows, fsync=True)
        return done

    def append(self, result: SeedResult) -> None:
        # Progress goes last: a seed counts as done only once its items are on disk.
        self.fence()
        progress = ProgressLine(
            seed_id=result.seed_id, accepted=len(result.items), rejected=len(result.rejections), cost=result.cost
        )
        for name, rows in (
            ("trajectories.jsonl", result.items),
            ("rejected.jsonl", result.rejections),
            ("progress.jsonl", [progress]),
        ):
            if rows:
                append_jsonl(self.out / name, (row.model_dump() for row in rows), fsync=True)


def synthesize(
    seeds_file: Path,
    out: Path,
    *,
    recipe: Recipe,
    retriever: Retriever,
    llms: LLMSession,
    limit: int | None = None,
    concurrency: int = 1,
    held_out: list[SeedItem] = (),
    show_progress: bool = True,
    recipe_source: str = "default",
    executor: Callable[..., SeedExecutor] | None = None,
    target_accepted: int | None = None,
    fence: Callable[[], None] | None = None,
) -> SynthesisReport:
    """Run the inner loop over `seeds_file` into `out` (see the module docstring).

    With `target_accepted`, seeds are drawn (in file order, up to `limit`) only until that many
    items are accepted; a resumed run counts what the folder holds, so a larger target continues.

    Bad seeds, an unreachable retriever and a mismatched existing run fail before
    anything is written. `held_out` questions (the world's dev/test) gate contamination
    twice: a seed overlapping one is skipped (reason `contaminated_seed`), and an accepted
    item overlapping one is left out of the datasets. `executor` runs the seeds: default
    `ThreadExecutor` (this process); `autodata.ray_executor.RayExecutor` shards them over a Ray
    cluster. Either way this process alone writes the run folder. `fence`, called before every
    write to the folder, raises when this process may no longer write it (a service worker whose
    job was taken over: `WorkQueue.check_lease`); the error ends the run, nothing more written.
    """
    # Every record is checked before anything is written; then the file is streamed, not held.
    total = count_seeds(seeds_file)
    total = min(total, limit) if limit is not None else total
    if not total:
        raise SeedDataError(f"{seeds_file}: no seeds to synthesize from.")
    retriever.search([next(iter_seeds(seeds_file)).question], topk=1)  # fail now, not halfway, if search is down
    llms.check_reachable(SYNTHESIS_ROLES)  # likewise for the models
    output = _Output(Path(out), recipe, Path(seeds_file), recipe_source, fence)
    done = output.open()
    gate = HeldOutQuestions(held_out) if held_out else None
    progress = _Progress(output.out, total=total, initial=min(len(done), total), enabled=show_progress)
    run_now = 0

    def todo():
        nonlocal run_now
        for seed in islice(iter_seeds(seeds_file), total):
            if target_accepted is not None and progress.accepted >= target_accepted:
                return
            if seed.id not in done:
                run_now += 1
                yield seed

    make_executor = executor or ThreadExecutor
    with make_executor(recipe=recipe, retriever=retriever, llms=llms, held_out=gate, concurrency=concurrency) as run:
        try:
            for result in run.map(todo()):
                progress.record(output, result)
        finally:
            progress.close()
    output.fence()
    manifest = finalize(output.out, recipe, total, gate, target_accepted=target_accepted)
    return SynthesisReport(output.out, manifest.record(), seeds_run_now=run_now, run_manifest=manifest)


class SeedExecutor(Protocol):
    """Runs seeds, yielding each one's result as it finishes; a context manager."""

    def __enter__(self) -> SeedExecutor: ...
    def __exit__(self, *exc) -> None: ...
    def map(self, seeds: Iterable[SeedItem]) -> Iterator[SeedResult]: ...


class ThreadExecutor:
    """Seeds run by threads of this process, at most `concurrency` at once.

    Seeds are drawn from the stream only as slots free up, so memory holds the seeds in
    flight, not the file. With as many seeds in flight as endpoint slots the slots stay
    busy: each seed waits on one LLM call at a time, and the client holds a slot only
    while its request is on the wire (more seeds than slots measured no faster on 2 cores).
    """

    def __init__(
        self,
        *,
        recipe: Recipe,
        retriever: Retriever,
        llms: LLMSession,
        held_out: HeldOutQuestions | None,
        concurrency: int,
    ):
        self.processor = SeedProcessor(recipe, retriever, llms, held_out=held_out)
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="seed")

    def __enter__(self) -> ThreadExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, seeds: Iterable[SeedItem]) -> Iterator[SeedResult]:
        running = set()
        try:
            for seed in seeds:
                running.add(self._pool.submit(self.processor.process, seed))
                if len(running) >= self.concurrency:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in finished)
            for future in as_completed(running):
                yield future.result()
        finally:  # an error, Ctrl-C or the consumer stopping: do not start the seeds still queued
            for future in running:
                future.cancel()


class _Progress:
    def __init__(self, out: Path, *, total: int, initial: int, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, desc="synthesizing", unit=" seed", disable=not enabled)
        previous = run_totals(out)
        self.accepted, self.rejected, self.calls = previous["accepted"], previous["rejected"], previous["llm_calls"]

    def record(self, output: _Output, result: SeedResult) -> None:
        output.append(result)
        self.accepted += len(result.items)
        self.rejected += len(result.rejections)
        self.calls += sum(c["calls"] for c in result.cost.values())
        per_item = f"{self.calls / self.accepted:.1f}" if self.accepted else "-"
        self.bar.set_postfix(accepted=self.accepted, rejected=self.rejected, calls_per_accepted=per_item)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


NOT_CANDIDATES = ("no_evidence", "contaminated_seed")  # seeds stopped before any question was written


def count_candidates(accepted: int, rejections: Mapping[str, int]) -> int:
    """Candidate questions that reached the checks: accepted or rejected, not seeds stopped before."""
    return accepted + sum(rejections.values()) - sum(rejections.get(reason, 0) for reason in NOT_CANDIDATES)


def run_totals(out: Path) -> dict[str, int]:
    """Seeds a run folder has finished (what a resumed run skips), items accepted and rejected, LLM calls."""
    totals = Counter(seeds_done=0, accepted=0, rejected=0, llm_calls=0)
    for row in ProgressLine.read(Path(out) / "progress.jsonl"):
        totals.update(
            seeds_done=1,
            accepted=row.accepted,
            rejected=row.rejected,
            llm_calls=sum(cost.calls for cost in row.cost.values()),
        )
    return dict(totals)


def finalize(
    out: Path,
    recipe: Recipe,
    total_seeds: int,
    held_out: HeldOutQuestions | None,
    *,
    target_accepted: int | None = None,
) -> RunManifest:
    """Datasets and manifest from the run folder's records (idempotent)."""
    accepted = list(AcceptedItem.read(out / "trajectories.jsonl"))  # the datasets are written whole (ShareGPT)
    tally = _Tally.of(out)
    # Gates that need the whole set: near duplicates across seeds, contamination with dev/test.
    as_seeds = [SeedItem(id=item.id, question=item.question, golden_answers=[item.answer]) for item in accepted]
    duplicate_ids = {later for _, later, _ in find_near_duplicates(as_seeds)}
    contaminated_ids = {i.id for i in as_seeds if held_out.overlap(i) is not None} if held_out else set()
    dropped = duplicate_ids | contaminated_ids
    kept = [item for item in accepted if item.id not in dropped]
    gates = QualityGates(
        **write_datasets(kept, out),
        near_duplicates_removed=len(duplicate_ids),
        contaminated_removed=len(contaminated_ids),
        contamination_checked_against=held_out.size if held_out else 0,
        all_with_search=all(item.trajectory.searches for item in kept),
        max_turns=max((len(item.trajectory.steps) for item in kept), default=0),
    )
    manifest = _manifest(out, recipe, total_seeds, accepted, kept, tally, gates)
    if target_accepted is not None:
        target = TargetOutcome(
            accepted=target_accepted, met=len(accepted) >= target_accepted, seeds_used=tally.seeds_done
        )
        manifest = manifest.model_copy(update={"target": target})
    atomic_write_json(out / "manifest.json", manifest.record())
    return manifest


@dataclass
class _Tally:
    """What a run folder's rejections and progress lines add up to."""

    seeds_done: int
    rejections: Counter[str]  # per reason, in order of first appearance
    costs: dict[str, Counter[str]]  # per role: calls and tokens

    @classmethod
    def of(cls, out: Path) -> _Tally:
        rejections = Counter(row.reason for row in Rejection.read(out / "rejected.jsonl"))
        costs: dict[str, Counter[str]] = {}
        seeds_done = 0
        for row in ProgressLine.read(out / "progress.jsonl"):
            seeds_done += 1
            for role, cost in row.cost.items():
                costs.setdefault(role, Counter()).update(cost.model_dump())
        return cls(seeds_done, rejections, costs)


def _manifest(
    out: Path,
    recipe: Recipe,
    total_seeds: int,
    accepted: list[AcceptedItem],
    kept: list[AcceptedItem],
    tally: _Tally,
    gates: QualityGates,
) -> RunManifest:
    rejections, seeds_done = tally.rejections, tally.seeds_done
    rejected = sum(rejections.values())
    not_candidates = sum(rejections[reason] for reason in NOT_CANDIDATES)
    candidates = count_candidates(len(accepted), rejections)
    with_evidence = seeds_done - not_candidates
    run_info = json.loads((out / "run.json").read_text(encoding="utf-8"))  # seeds hashed when the run opened
    return RunManifest(
        dataset_version=f"{recipe.content_hash}-{run_info['seeds_sha256'][:12]}",
        recipe_hash=recipe.content_hash,
        recipe_name=recipe.name,
        recipe_source=run_info["recipe_source"],
        acceptance_rule=recipe.acceptance.rule,
        hint_mode=recipe.hint_mode,
        weak_mode=recipe.weak_mode,
        seeds=SeedCounts(
            total=total_seeds,
            done=seeds_done,
            with_evidence=with_evidence,
            with_accepted_item=len({i.seed_id for i in accepted}),
            contaminated_skipped=rejections["contaminated_seed"],
        ),
        items=ItemCounts(accepted=len(accepted), in_datasets=len(kept), rejected_candidates=rejected),
        # Per candidate question that reached the checks; the two below count per seed.
        acceptance_rate=round(len(accepted) / candidates, 4) if candidates else 0.0,
        accepted_per_seed=round(len(accepted) / seeds_done, 4) if seeds_done else 0.0,
        accepted_per_seed_with_evidence=round(len(accepted) / with_evidence, 4) if with_evidence else 0.0,
        by_strategy=dict(Counter(i.strategy for i in kept)),
        by_task_type=dict(Counter(i.tags.task_type for i in kept)),
        by_hops={str(k): v for k, v in Counter(i.hops for i in kept).items()},
        rejections=dict(rejections),
        llm_per_accepted_item={
            role: {name: round(value / len(accepted), 2) for name, value in cost.items()}
            for role, cost in tally.costs.items()
        }
        if accepted
        else {},
        llm_totals={role: dict(cost) for role, cost in tally.costs.items()},
        quality_gates=gates,
        files=["trajectories.jsonl", "rejected.jsonl", "sft_dataset.json", "dataset_info.json", "midtrain.jsonl"],
        autodata_version=__version__,
    )
