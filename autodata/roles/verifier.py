"""Verifier (judge role): picks the trajectory to keep, rejecting any that cheats.

`check_trajectory` holds the programmatic checks: at least one search; every
observation exactly what the retriever returns for its query (no fabricated
observations); the final answer matches and is stated in an observation; no thought or
query holds the answer (or a multi-hop question's hidden bridge) before an observation
showed it, and no thought speaks of being told (`hint_leak`); every thought says
something, does not repeat itself and does not contradict its step (`bad_thought`); no
needless search (a repeated query, or a search after the answer was already in hand).
Verifier reads: question, answer, the strong solver's correct trajectories. Writes: the
chosen `trajectory`, or None with the `reason` none was kept (a rejection reason:
`unverified`, `hint_leak`, `bad_thought`) and its `detail` for people; with `llm_judge`,
the judge model must also accept the chosen one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal, NamedTuple

import dspy

from autodata.answers import exact_match, normalize_answer, sub_exact_match
from autodata.recipe import SearchRecipe
from autodata.roles._types import Reason
from autodata.search.protocol import Retriever
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

    reason: Literal["unverified", "hint_leak", "bad_thought"]
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


def check_trajectory(
    trajectory: Trajectory,
    answer: str,
    retriever: Retriever,
    search: SearchRecipe,
    *,
    bridge: str | None = None,
    hinted_titles: Sequence[str] = (),
) -> Problem | None:
    """None if the trajectory may be kept, else the `Problem` (see the README's verification rules).

    `bridge`: a multi-hop question's hidden entity, and `hinted_titles`: the articles the strong
    solver's hint named; like the answer, they may appear in a thought or query only after an
    observation showed them (a title the question itself names is no secret).
    """
    searches = trajectory.searches
    if not searches:
        return Problem("unverified", "no search: not search-augmented")
    if trajectory.answer is None:
        return Problem("unverified", "no final answer")
    if not exact_match(trajectory.answer, [answer]):
        return Problem("unverified", f"final answer {trajectory.answer!r} does not match {answer!r}")
    fresh = retriever.search([s.query for s in searches], topk=search.top_k)
    for step, hits in zip(searches, fresh):
        if step.observation != observation_text(hits, search.max_observation_tokens, search.observation_tokenizer):
            return Problem("unverified", f"fabricated observation for query {step.query!r}")
    if not any(sub_exact_match(s.observation, [answer]) for s in searches):
        return Problem("unverified", "answer not supported by any observation")
    if problem := _knowledge_before_evidence(trajectory, answer, bridge, hinted_titles):
        return problem
    if problem := _thought_problem(trajectory):
        return problem
    seen: set[str] = set()
    for index, step in enumerate(searches):
        key = normalize_answer(step.query)
        if key in seen:
            return Problem("unverified", f"needless search: repeated query {step.query!r}")
        seen.add(key)
        if index > 0 and sub_exact_match(searches[index - 1].observation, [answer]):
            return Problem("unverified", "needless search: the answer was already retrieved")
    return None


def _knowledge_before_evidence(
    trajectory: Trajectory, answer: str, bridge: str | None, hinted_titles: Sequence[str]
) -> Problem | None:
    """`hint_leak`: a thought or query holds the answer, the hidden bridge or a hinted article's title
    before an observation showed it, or a thought speaks of being told."""
    secrets = [("the answer", answer), *([("the bridge entity", bridge)] if bridge else [])]
    for title in hinted_titles:
        name = re.sub(r"\s*\([^)]*\)$", "", title)  # "Python (programming language)": Python
        if normalize_answer(name) and not sub_exact_match(trajectory.question, [name]):
            secrets.append(("the hinted article title", name))
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


def _thought_problem(trajectory: Trajectory) -> Problem | None:
    """`bad_thought`: a thought that is empty, repeats itself or an earlier one, or contradicts its step."""
    earlier: set[str] = set()
    for number, step in enumerate(trajectory.steps, start=1):
        words = normalize_answer(step.think).split()
        if len(words) < 2:
            return Problem("bad_thought", f"step {number}'s thought is empty")
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
    return None


class Verifier(dspy.Module):
    def __init__(self, instructions: str, retriever: Retriever, search: SearchRecipe, *, llm_judge: bool):
        super().__init__()
        self.retriever, self.search, self.llm_judge = retriever, search, llm_judge
        self.judge = dspy.Predict(JudgeTrajectory.with_instructions(instructions))

    def forward(
        self,
        question: str,
        answer: str,
        trajectories: list[Trajectory],
        config: dict,
        bridge: str | None = None,
        hinted_titles: Sequence[str] = (),
    ) -> dspy.Prediction:
        problems, valid = [], []
        for trajectory in trajectories:
            problem = check_trajectory(
                trajectory, answer, self.retriever, self.search, bridge=bridge, hinted_titles=hinted_titles
            )
            (problems.append(problem) if problem else valid.append(trajectory))
        if not valid:
            first = problems[0] if problems else Problem("unverified", "no correct trajectory")
            return dspy.Prediction(trajectory=None, reason=first.reason, detail=first.detail)
        chosen = min(valid, key=lambda t: (len(t.searches), sum(len(s.observation) for s in t.searches)))
        if self.llm_judge:
            evidence = "\n".join(
                render_information(s.observation) for s in chosen.searches if isinstance(s, SearchStep)
            )
            verdict = self.judge(question=question, answer=answer, evidence=evidence, config=config)
            if verdict.verdict != "accept":
                return dspy.Prediction(trajectory=None, reason="unverified", detail=f"judge rejected: {verdict.reason}")
        return dspy.Prediction(trajectory=chosen, reason=None, detail=None)
