"""Verifier (judge role): picks the trajectory to keep, rejecting any that cheats.

`check_trajectory` holds the programmatic checks: at least one search; every
observation exactly what the retriever returns for its query (no fabricated
observations); the final answer matches and is stated in an observation; no needless
search (a repeated query, or a search after the answer was already in hand).
Verifier reads: question, answer, the strong solver's correct trajectories. Writes: the
chosen trajectory or the reason none was kept; with `llm_judge`, the judge model must
also accept the chosen one.
"""

from __future__ import annotations

from typing import Literal

import dspy

from autodata.recipe import SearchRecipe
from autodata.roles._types import Reason
from autodata.search.protocol import Retriever, format_hits
from autodata.trajectory import SearchStep, Trajectory, render_information, observation_text
from autodata.answers import exact_match, normalize_answer, sub_exact_match


class JudgeTrajectory(dspy.Signature):
    """Judge a trajectory (instructions come from the recipe)."""

    question: str = dspy.InputField()
    answer: str = dspy.InputField()
    evidence: str = dspy.InputField(desc="what the searches returned")
    verdict: Literal["accept", "reject"] = dspy.OutputField()
    reason: Reason = dspy.OutputField(desc="one sentence")


def check_trajectory(trajectory: Trajectory, answer: str, retriever: Retriever, search: SearchRecipe) -> str | None:
    """None if the trajectory may be kept, else the reason it may not."""
    searches = trajectory.searches
    if not searches:
        return "no search: not search-augmented"
    if trajectory.answer is None:
        return "no final answer"
    if not exact_match(trajectory.answer, [answer]):
        return f"final answer {trajectory.answer!r} does not match {answer!r}"
    fresh = retriever.search([s.query for s in searches], topk=search.top_k)
    for step, hits in zip(searches, fresh):
        if step.observation != observation_text(hits, search.max_observation_tokens, search.observation_tokenizer):
            return f"fabricated observation for query {step.query!r}"
    if not any(sub_exact_match(s.observation, [answer]) for s in searches):
        return "answer not supported by any observation"
    first_found = next(i for i, s in enumerate(searches) if sub_exact_match(s.observation, [answer]))
    if any(sub_exact_match(s.query, [answer]) for s in searches[: first_found + 1]):
        return "a search query holds the answer before any search returned it"
    seen: set[str] = set()
    for index, step in enumerate(searches):
        key = normalize_answer(step.query)
        if key in seen:
            return f"needless search: repeated query {step.query!r}"
        seen.add(key)
        if index > 0 and sub_exact_match(searches[index - 1].observation, [answer]):
            return "needless search: the answer was already retrieved"
    return None


class Verifier(dspy.Module):
    def __init__(self, instructions: str, retriever: Retriever, search: SearchRecipe, *, llm_judge: bool):
        super().__init__()
        self.retriever, self.search, self.llm_judge = retriever, search, llm_judge
        self.judge = dspy.Predict(JudgeTrajectory.with_instructions(instructions))

    def forward(self, question: str, answer: str, trajectories: list[Trajectory], config: dict) -> dspy.Prediction:
        reasons, valid = [], []
        for trajectory in trajectories:
            reason = check_trajectory(trajectory, answer, self.retriever, self.search)
            (reasons.append(reason) if reason else valid.append(trajectory))
        if not valid:
            return dspy.Prediction(trajectory=None, reason=reasons[0] if reasons else "no correct trajectory")
        chosen = min(valid, key=lambda t: (len(t.searches), sum(len(s.observation) for s in t.searches)))
        if self.llm_judge:
            evidence = "\n".join(render_information(s.observation) for s in chosen.searches if isinstance(s, SearchStep))
            verdict = self.judge(question=question, answer=answer, evidence=evidence, config=config)
            if verdict.verdict != "accept":
                return dspy.Prediction(trajectory=None, reason=f"judge rejected: {verdict.reason}")
        return dspy.Prediction(trajectory=chosen, reason=None)
