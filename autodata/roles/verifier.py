"""Verifier (judge role): picks the trajectory to keep, rejecting any that cheats.

`check_trajectory` holds the programmatic checks: at least one search; every
observation exactly what the retriever returns for its query (no fabricated
observations); the final answer matches and is stated in a passage of the observation it
rests on, a passage about what the question asks that meets its year and time constraints
(a refusal: no observation states a guess of the answer) (`unsupported`); a two-hop question walks both hops (`not_multi_hop`); no
thought or query holds the answer (or a multi-hop question's hidden bridge, or a hinted
title) before an observation showed it, and no thought speaks of being told (`hint_leak`);
every thought is prose that says something, does not repeat itself and does not contradict
its step (`bad_thought`), and states no name or number it has not seen
(`ungrounded_thought`); no needless search. Verifier reads: the question, what its answer
must be and rest on (`Expected`), the strong solver's correct trajectories. Writes: the
chosen `trajectory`, or None with the `reason` none was kept and its `detail` for people;
with `llm_judge`, the judge model, shown the passage the answer rests on, must also accept it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, NamedTuple

import dspy

from autodata.answers import (
    FUNCTION_WORDS,
    answer_form,
    content_words,
    exact_match,
    normalize_answer,
    split_as_of,
    sub_exact_match,
)
from autodata.recipe import SearchRecipe
from autodata.roles._types import Reason
from autodata.search.protocol import Hit, Retriever, article_name, format_hits, title_of
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, observation_text, render_information


class JudgeTrajectory(dspy.Signature):
    """Judge a trajectory (instructions come from the recipe)."""

    question: str = dspy.InputField()
    answer: str = dspy.InputField()
    evidence: str = dspy.InputField(desc="what the searches returned")
    verdict: Literal["accept", "reject"] = dspy.OutputField()
    reason: Reason = dspy.OutputField(desc="one sentence")


class Problem(NamedTuple):
    """Why a trajectory may not be kept: `reason` is the rejection reason counted in the manifest."""

    reason: Literal["unverified", "unsupported", "not_multi_hop", "hint_leak", "bad_thought", "ungrounded_thought"]
    detail: str


# A thought that speaks of what the solver was told reads like a solver that knew the answer.
_TOLD = re.compile(
    r"\b(hint|hints|hinted|(i|we) (was|were|am|are|have been) told|told (me|us|that)|given answer|"
    r"answer (is|was) given|known answer|(i|we) already know|as instructed)\b",
    re.IGNORECASE,
)
# A thought before a search that says it answers now; one before an answer that says it must search first.
_WILL_ANSWER = re.compile(
    r"\b(i can answer now|i will answer now|i will now answer|no (more|further) searches? "
    r"(is |are )?needed)\b",
    re.IGNORECASE,
)
_WILL_SEARCH = re.compile(r"\b(i (need|should|will|must) (to )?search|let me search)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Expected:
    """What a kept trajectory must show for its candidate question.

    `answers`: the strings that are the answer; `facts`: what it rests on (the answer itself for
    a fact; nothing for a refusal), stated in one passage of the observation the answer step
    rests on (`together`), or each in some observation (a conflict's or an ambiguous scope's
    values); `document`: the article the question names, whose passage that must be; `absent`: a
    refusal's guesses, which no observation may state; `bridge` and `hop_passages`: a two-hop
    question's hidden entity and the ids of both hop passages; `hinted_titles`: the articles the
    strong solver's hint named. The bridge and hinted titles, like the facts, are secrets until
    an observation shows them (a title the question itself names is no secret)."""

    answers: tuple[str, ...]
    facts: tuple[str, ...]
    together: bool = True
    absent: tuple[str, ...] = ()
    bridge: str | None = None
    hop_passages: tuple[str, ...] = ()
    hinted_titles: tuple[str, ...] = ()
    document: str | None = None

    @classmethod
    def fact(cls, answer: str, **more) -> Expected:
        return cls(answers=(answer,), facts=(answer,), **more)


def check_trajectory(
    trajectory: Trajectory, expected: Expected, retriever: Retriever, search: SearchRecipe
) -> Problem | None:
    """None if the trajectory may be kept, else the `Problem` (see the README's verification rules)."""
    return _checked(trajectory, expected, retriever, search)[0]


def _checked(
    trajectory: Trajectory, expected: Expected, retriever: Retriever, search: SearchRecipe
) -> tuple[Problem | None, list[Hit]]:
    """`check_trajectory`'s verdict, and the hits its last search gave again (what the answer rests on)."""
    searches = trajectory.searches
    if not searches:
        return Problem("unverified", "no search: not search-augmented"), []
    if trajectory.answer is None:
        return Problem("unverified", "no final answer"), []
    if not exact_match(trajectory.answer, expected.answers):
        return Problem("unverified", f"final answer {trajectory.answer!r} does not match {expected.answers[0]!r}"), []
    fresh = retriever.search([s.query for s in searches], topk=search.top_k)
    for step, hits in zip(searches, fresh):
        if step.observation != observation_text(hits, search.max_observation_tokens, search.observation_tokenizer):
            return Problem("unverified", f"fabricated observation for query {step.query!r}"), []
    checks = (
        lambda: _support_problem(trajectory, expected, fresh[-1]),
        lambda: _knowledge_before_evidence(trajectory, expected),
        lambda: thought_problem(trajectory),
        lambda: _hops_problem(trajectory, expected),
        lambda: _needless_search(trajectory, expected),
    )
    return next((problem for check in checks if (problem := check()) is not None), None), fresh[-1]


def answer_passage(trajectory: Trajectory, expected: Expected, last_hits: Sequence[Hit]) -> Hit | None:
    """The passage of the observation the answer step rests on (the last search's) that states all
    the facts the answer rests on (from the named document, if the question names one); None if
    none does or the answer rests on several."""
    if not expected.facts or not expected.together:
        return None
    hits = [h for h in last_hits if expected.document is None or title_of(h) == expected.document]
    return next((h for h in hits if all(sub_exact_match(h.contents, [f]) for f in expected.facts)), None)


def _support_problem(trajectory: Trajectory, expected: Expected, last_hits: Sequence[Hit]) -> Problem | None:
    """`unsupported`: the answer is not stated where it must be, in a passage about the question."""
    observations = [s.observation for s in trajectory.searches]
    if expected.absent and (
        guess := next((g for g in expected.absent if sub_exact_match("\n".join(observations), [g])), None)
    ):
        return Problem("unsupported", f"a refusal, but a search retrieved {guess!r}, a guess of the answer")
    if not expected.facts:
        return None
    if not expected.together:
        missing = [f for f in expected.facts if not any(sub_exact_match(o, [f]) for o in observations)]
        if missing:
            return Problem("unsupported", f"no observation states {missing[0]!r}")
        return constraint_problem(trajectory.question, trajectory.answer or "", "\n".join(observations))
    passage = answer_passage(trajectory, expected, last_hits)
    if passage is None:
        where = f"of {expected.document!r} " if expected.document else ""
        return Problem(
            "unsupported", f"the last search, which the answer rests on, retrieved no passage {where}stating it"
        )
    asked = content_words(trajectory.question) - content_words(" ".join(expected.facts))
    shared = asked & content_words(f"{passage.title} {passage.text}")
    names_bridge = expected.bridge is not None and sub_exact_match(passage.contents, [expected.bridge])
    if not names_bridge and ABOUT_SHARE * len(shared) < len(asked):
        title = title_of(passage)
        return Problem(
            "unsupported",
            f"the passage stating the answer, {title!r}, is not about the question "
            f"({len(shared)} of its {len(asked)} content words)",
        )
    return constraint_problem(trajectory.question, trajectory.answer or "", passage.contents)


# Words that ask about a moment the question does not fix ("the next Olympics", "the current
# mayor"): a static corpus answers them only with the time its passage gives, "V (as of T)".
_RELATIVE_TIME = re.compile(
    r"\b(next|current|currently|latest|upcoming|now|nowadays|presently|today|this year|most recent|"
    r"most recently|last time)\b",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")


def constraint_problem(question: str, answer: str, evidence: str) -> Problem | None:
    """`unsupported`: the evidence the answer rests on ignores a constraint of the question. Each
    year the question names (and the answer does not) must be in that evidence; a question about
    a relative time ("next", "current", ...) needs an answer with the time boundary the evidence
    gives (`as of`), or its answer may be true of another time (the 2008 Games for "the next").
    A false premise's correction is exempt: its question names what the evidence contradicts."""
    if answer_form(answer) == "correction":
        return None
    given = set(_YEAR.findall(evidence))
    missing = [year for year in _YEAR.findall(question) if year not in answer and year not in given]
    if missing:
        return Problem(
            "unsupported", f"the question asks about {missing[0]}, which the passage it rests on never names"
        )
    if (relative := _RELATIVE_TIME.search(question)) and split_as_of(answer) is None:
        return Problem(
            "unsupported",
            f"the question asks about {relative.group(0).lower()!r}, a time it does not fix, and the answer "
            "gives no time boundary ('as of ...')",
        )
    return None


def _hops_problem(trajectory: Trajectory, expected: Expected) -> Problem | None:
    """`not_multi_hop`: a two-hop question answered without walking both hops."""
    if expected.bridge is None:
        return None
    searches = trajectory.searches
    if len(searches) < 2:
        return Problem("not_multi_hop", "one search for a two-hop question")
    if any(sub_exact_match(searches[0].observation, [f]) for f in expected.facts):
        return Problem("not_multi_hop", "the first search already retrieved the answer")
    if not any(sub_exact_match(s.query, [expected.bridge]) for s in searches[1:]):
        return Problem("not_multi_hop", f"no later query names the bridge {expected.bridge!r}")
    retrieved = {hit_id for s in searches for hit_id in s.hit_ids}
    if missing := [p for p in expected.hop_passages if p not in retrieved]:
        return Problem("not_multi_hop", f"hop passage {missing[0]!r} was never retrieved")
    return None


def _needless_search(trajectory: Trajectory, expected: Expected) -> Problem | None:
    """`unverified`: a repeated query, or a search after what the answer rests on was retrieved."""
    seen: set[str] = set()
    searches = trajectory.searches
    for index, step in enumerate(searches):
        key = normalize_answer(step.query)
        if key in seen:
            return Problem("unverified", f"needless search: repeated query {step.query!r}")
        seen.add(key)
        earlier = "\n".join(s.observation for s in searches[:index])
        if index > 0 and expected.facts and all(sub_exact_match(earlier, [f]) for f in expected.facts):
            return Problem("unverified", "needless search: the answer was already retrieved")
    return None


def _knowledge_before_evidence(trajectory: Trajectory, expected: Expected) -> Problem | None:
    """`hint_leak`: a thought or query holds the answer, the hidden bridge or a hinted article's title
    before an observation showed it, or a thought speaks of being told."""
    secrets = secrets_of(trajectory.question, expected.facts, expected.bridge, expected.hinted_titles)
    observed = ""
    for number, step in enumerate(trajectory.steps, start=1):
        texts = {"thought": step.think, **({"query": step.query} if isinstance(step, SearchStep) else {})}
        for what, text in texts.items():
            if _TOLD.search(text):
                return Problem("hint_leak", f"step {number}'s thought speaks of being told: {text[:80]!r}")
            for name, secret in secrets:
                if sub_exact_match(text, [secret]) and not sub_exact_match(observed, [secret]):
                    return Problem(
                        "hint_leak", f"step {number}'s {what} holds {name} {secret!r} before any observation showed it"
                    )
        if isinstance(step, SearchStep):
            observed += "\n" + step.observation
    return None


def secrets_of(
    question: str, facts: Sequence[str], bridge: str | None, hinted_titles: Sequence[str]
) -> list[tuple[str, str]]:
    """What no thought or query may name before an observation showed it, as (what, text): the
    facts the answer rests on, a two-hop question's bridge, the hinted titles the question does not name."""
    secrets = [("the answer", fact) for fact in facts]
    secrets += [("the bridge entity", bridge)] if bridge else []
    for title in hinted_titles:
        name = article_name(title)
        if normalize_answer(name) and not sub_exact_match(question, [name]):
            secrets.append(("the hinted article title", name))
    return secrets


def thought_problem(trajectory: Trajectory) -> Problem | None:
    """`bad_thought`: a thought that is empty or too short, not prose, repeats itself or an earlier
    one, contradicts its step, or (the answer's) is about neither the question nor the answer; `ungrounded_thought`: one that states a name or number neither the
    question nor an earlier observation holds, or answers before the first search."""
    earlier: set[str] = set()
    seen = _words_of(trajectory.question)
    observations: list[str] = []
    for number, step in enumerate(trajectory.steps, start=1):
        words = normalize_answer(step.think).split()
        if len(words) < MIN_THOUGHT_WORDS:
            return Problem("bad_thought", f"step {number}'s thought is empty or too short: {step.think[:80]!r}")
        if why := _not_prose(step.think, observations + ([step.observation] if isinstance(step, SearchStep) else [])):
            return Problem("bad_thought", f"step {number}'s thought is not prose ({why}): {step.think[:80]!r}")
        # "Search 1; Search 2; Search 3": one word (or pair) again and again, or an earlier thought copied
        top_word = max(Counter(w for w in words if len(w) >= 4).values(), default=0)
        top_pair = Counter(pairwise(words)).most_common(1)[0][1] if len(words) > 1 else 0
        if (key := " ".join(words)) in earlier or top_pair >= 3 or (top_word >= 3 and top_word >= len(words) / 3):
            return Problem("bad_thought", f"step {number}'s thought repeats itself: {step.think[:80]!r}")
        earlier.add(key)
        if isinstance(step, SearchStep) and _WILL_ANSWER.search(step.think):
            return Problem("bad_thought", f"step {number}'s thought says it answers now, then it searches")
        if isinstance(step, AnswerStep) and _WILL_SEARCH.search(step.think):
            return Problem("bad_thought", f"step {number}'s thought says it must search, then it answers")
        if isinstance(step, AnswerStep) and not content_words(step.think) & content_words(
            f"{trajectory.question} {step.answer}"
        ):
            return Problem(
                "bad_thought",
                f"step {number}'s thought is about neither the question nor its answer: {step.think[:80]!r}",
            )
        if not observations and _ANSWERS_NOW.search(step.think):
            return Problem("ungrounded_thought", f"step {number}'s thought answers before any search")
        if unseen := [w for w in _names_and_numbers(step.think) if w not in seen]:
            return Problem(
                "ungrounded_thought", f"step {number}'s thought states {unseen[0]!r}, which nothing it saw holds"
            )
        if isinstance(step, SearchStep):
            observations.append(step.observation)
            seen |= _words_of(step.observation)
    return None


# Prose has none of these: markup, code, JSON, or the retriever's "Doc 1(Title: ...)" copied.
_MARKUP = re.compile(r"[\[\]{}<>#|=*_\\`]|\(Title:|\bDoc \d")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d[\d,.]*")
_ANSWERS_NOW = re.compile(r"\b(the answer (is|was|would be|must be)|answer:)", re.IGNORECASE)
ABOUT_SHARE = 3  # a passage about the question holds at least 1 in this many of its content words
COPIED_WORDS = 10  # a thought sharing this many consecutive words with an observation copies it
MIN_THOUGHT_WORDS = 3  # "I search" says nothing


def _not_prose(thought: str, observations: Sequence[str]) -> str | None:
    """Why a thought is not prose (markup, mostly numbers, only names, a copied passage), or None."""
    if _MARKUP.search(thought):
        return "markup"
    tokens = _WORD.findall(thought)
    if sum(t[0].isdigit() for t in tokens) * 3 > len(tokens):
        return "mostly numbers"
    # A sentence says something of what it names: some content word not capitalised (a verb, a
    # noun); "Benjamin Franklin" or "The United States Declaration of Independence" says nothing.
    if not any(t[0].islower() and t not in FUNCTION_WORDS for t in tokens):
        return "only names"
    words = normalize_answer(thought).split()
    grams = {" ".join(words[i : i + COPIED_WORDS]) for i in range(len(words) - COPIED_WORDS + 1)}
    if grams and any(g in normalize_answer(o) for o in observations for g in grams):
        return "a copied passage"
    return None


def _words_of(text: str) -> set[str]:
    """The normalized words of `text`, hyphenated ones also apart ("Moby-Dick": mobydick, moby, dick),
    as `_names_and_numbers` finds them in a thought."""
    return set(normalize_answer(text).split()) | {normalize_answer(w) for w in _WORD.findall(text)}


def _names_and_numbers(thought: str) -> list[str]:
    """The normalized names (capitalised words not starting a sentence) and numbers a thought states."""
    found = []
    for match in _WORD.finditer(thought):
        word = match.group()
        before = thought[: match.start()].rstrip()
        starts_sentence = not before or before[-1] in ".!?:;\"'("
        if word[0].isdigit() or (word[0].isupper() and not starts_sentence and word != "I"):
            found.extend(normalize_answer(re.sub(r"['’]s$", "", word)).split())
    return found


class Verifier(dspy.Module):
    def __init__(self, instructions: str, retriever: Retriever, search: SearchRecipe, *, llm_judge: bool):
        super().__init__()
        self.retriever, self.search, self.llm_judge = retriever, search, llm_judge
        self.judge = dspy.Predict(JudgeTrajectory.with_instructions(instructions))

    def forward(
        self, question: str, expected: Expected, trajectories: list[Trajectory], config: dict
    ) -> dspy.Prediction:
        problems, valid = [], []  # valid: (trajectory, its last search's hits)
        for trajectory in trajectories:
            problem, last_hits = _checked(trajectory, expected, self.retriever, self.search)
            (problems.append(problem) if problem else valid.append((trajectory, last_hits)))
        if not valid:
            first = problems[0] if problems else Problem("unverified", "no correct trajectory")
            return dspy.Prediction(trajectory=None, reason=first.reason, detail=first.detail)
        chosen, last_hits = min(
            valid, key=lambda pair: (len(pair[0].searches), sum(len(s.observation) for s in pair[0].searches))
        )
        if self.llm_judge:  # it sees the passage the answer rests on (a refusal or conflict: every observation)
            passage = answer_passage(chosen, expected, last_hits)
            evidence = (
                render_information(format_hits([passage]))
                if passage is not None
                else "\n".join(render_information(s.observation) for s in chosen.searches)
            )
            verdict = self.judge(question=question, answer=expected.answers[0], evidence=evidence, config=config)
            if verdict.verdict != "accept":
                return dspy.Prediction(trajectory=None, reason="unverified", detail=f"judge rejected: {verdict.reason}")
        return dspy.Prediction(trajectory=chosen, reason=None, detail=None)
