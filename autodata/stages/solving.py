"""Stage 4: the weak and strong solvers attempt a screened candidate, as the acceptance rule asks.

Each attempt is one typed record: a weak attempt its 0/1 score, a strong one its score and the
trajectory the score is for (None, scored 0, when the reply could not be parsed), so the
trajectories the verifier sees can never drift from the scores. Attempt `i` of a solver is
rollout `i`: a re-run replays it from the LLM cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from autodata.answers import answer_form, exact_match, sub_exact_match
from autodata.recipe import Acceptance, Recipe
from autodata.roles.verifier import secrets_of
from autodata.stages.acceptance import final_verdict, sample_solvers, verdict_detail
from autodata.stages.base import Candidate, Problem, Roles, rollout, title_of
from autodata.trajectory import Trajectory


@dataclass(frozen=True)
class WeakAttempt:
    score: float  # 0/1: whether the answer matches
    answer: str | None = None  # what it answered (None: unparseable); a refusal's verifier checks these guesses


@dataclass(frozen=True)
class StrongAttempt:
    score: float  # 0/1: the answer matches and a search retrieved it
    trajectory: Trajectory | None  # None: the reply could not be parsed (scored 0)


@dataclass(frozen=True)
class Attempts:
    """The attempts sampling made, in rollout order, and the hint the strong solver had."""

    hint: str
    weak: tuple[WeakAttempt, ...]
    strong: tuple[StrongAttempt, ...]

    @property
    def weak_guesses(self) -> tuple[str, ...]:
        """The weak solver's wrong answers, in a form that states a fact (not a refusal or correction)."""
        return tuple(a.answer for a in self.weak if not a.score and a.answer and answer_form(a.answer) == "fact")

    @property
    def weak_scores(self) -> list[float]:
        return [attempt.score for attempt in self.weak]

    @property
    def strong_scores(self) -> list[float]:
        return [attempt.score for attempt in self.strong]

    def correct(self) -> list[Trajectory]:
        """The trajectories of the strong attempts that solved it (each has one: unparseable ones score 0)."""
        return [attempt.trajectory for attempt in self.strong if attempt.score and attempt.trajectory is not None]

    def problem(self, a: Acceptance) -> Problem | None:
        """Why the acceptance rule rejects the candidate (`too_easy`, `too_hard`, `gap`); None if it passes."""
        reason = final_verdict(self.weak_scores, self.strong_scores, a)
        if reason == "accepted":
            return None
        return Problem(reason, verdict_detail(reason, self.weak_scores, self.strong_scores, a))


def run_solvers(roles: Roles, c: Candidate) -> Attempts:
    """Weak and strong attempts as `sample_solvers` orders them (stopping once the verdict is settled)."""
    hint = strong_hint(roles.recipe, c)
    weak, strong = sample_solvers(
        lambda i: weak_attempt(roles, c, i),
        lambda i: strong_attempt(roles, c, i, hint),
        roles.recipe.acceptance,
        score=attrgetter("score"),
    )
    return Attempts(hint, tuple(weak), tuple(strong))


def weak_attempt(roles: Roles, c: Candidate, i: int) -> WeakAttempt:
    config = rollout(roles.hash, c.seed_id, c.round, "weak", i)
    prediction = roles.ask("weak", lambda: roles.weak(question=c.question, config=config))
    if prediction is None:
        return WeakAttempt(0.0)
    return WeakAttempt(exact_match(prediction.answer, c.answers), prediction.answer)


def strong_attempt(roles: Roles, c: Candidate, i: int, hint: str) -> StrongAttempt:
    answer_mode = roles.recipe.hint_mode == "answer"
    known, facts = (c.answer, c.support) if answer_mode else (None, None)
    config = rollout(roles.hash, c.seed_id, c.round, "strong", i)
    told = secrets_of(c.question, c.support, c.bridge, hinted_titles(roles.recipe, c)) if hint else []
    prediction = roles.ask(
        "strong",
        lambda: roles.strong(
            question=c.question,
            hint=hint,
            config=config,
            known_answer=known,
            known_facts=facts,
            secrets=tuple(secret for _, secret in told),
        ),
    )
    trajectory = prediction.trajectory if prediction is not None else None
    if trajectory is None:
        return StrongAttempt(0.0, None)
    return StrongAttempt(float(solved(c, trajectory)), trajectory)


def solved(c: Candidate, trajectory: Trajectory) -> bool:
    """The strong solver's score: the right answer, after searches whose observations state what
    it rests on (a refusal: after searches none of which retrieved a guess of the answer)."""
    observed = "\n".join(s.observation for s in trajectory.searches)
    return (
        bool(trajectory.searches)
        and trajectory.answer is not None
        and bool(exact_match(trajectory.answer, c.answers))
        and all(sub_exact_match(observed, [fact]) for fact in c.support)
        and not (c.absent and sub_exact_match(observed, c.absent))
    )


def strong_hint(recipe: Recipe, c: Candidate) -> str:
    """What the strong solver is told privately. A multi-hop hint names only the first hop's
    article: the answer's article is the bridge entity the question hides. The verifier
    rejects any trajectory that shows the hint (`hint_leak`)."""
    titles = hinted_titles(recipe, c)
    if recipe.hint_mode == "answer" and not c.support:  # a refusal: nothing states it
        return f"No passage states the answer. Search for it; if nothing you find states it, answer {c.answer!r}."
    if recipe.hint_mode == "answer":
        if c.hops == 2:
            return (
                f"The answer is {c.answer!r}. Start from the article {titles[0]!r}, find what "
                "the question describes, then search for that."
            )
        return f"The answer is {c.answer!r}. The article {titles[0]!r} states it: search for that article, then answer."
    if recipe.hint_mode == "titles":
        return "Useful articles: " + "; ".join(titles)
    return ""


def hinted_titles(recipe: Recipe, c: Candidate) -> list[str]:
    """The article titles the hint names: secrets, like the answer, until an observation shows them."""
    if recipe.hint_mode == "answer":
        return [title_of(c.passages[0] if c.hops == 2 else c.passages[-1])] if c.support else []
    if recipe.hint_mode == "titles":
        return [title_of(h) for h in (c.passages[:1] if c.hops == 2 else c.passages)]
    return []
