"""Weak solver (weak role) and strong solver (strong role, a real search agent).

WeakSolver reads: question (and passages in `rag` mode). Writes: answer.
StrongSolver reads: question, a private hint. Writes: a `Trajectory` of real searches
against the retriever and a final answer. The first step is always a search (the data
teaches search-augmented answering) and the last turn must answer, as Search-R1 forces
an answer at its turn limit. The hint steers the agent but is never part of the
trajectory: with a hint, each search step's thought is written again by a call that
sees only the question, the earlier observations and the query (`ExplainSearch`), so the
kept text reads like an agent that did not know; the verifier still rejects any that
leaks. With `known_answer` (rationalization), the agent stops searching once the
retrieved passages state what that answer rests on (`known_facts`, by default the answer
itself) and writes its final step; an answer that rests on nothing found (a refusal) is
given at the last turn, after the searches that found nothing. A retriever failure
propagates: a run without search cannot make this data.
"""

from __future__ import annotations

from typing import Literal

import dspy

from autodata.answers import sub_exact_match
from autodata.llm.dspy_engine import call_config
from autodata.recipe import SearchRecipe
from autodata.roles._types import SearchQuery, ShortAnswer, Thought
from autodata.roles.verifier import thought_problem
from autodata.search.protocol import Retriever
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, observation_text
from prompts import load_prompt


class AnswerClosedBook(dspy.Signature):
    question: str = dspy.InputField()
    answer: ShortAnswer = dspy.OutputField(desc="a short phrase")


class AnswerFromPassages(dspy.Signature):
    question: str = dspy.InputField()
    passages: str = dspy.InputField(desc="retrieved passages")
    answer: ShortAnswer = dspy.OutputField(desc="a short phrase")


class PlanFirstSearch(dspy.Signature):
    question: str = dspy.InputField()
    hint: str = dspy.InputField(desc="a private hint; may be empty")
    think: Thought = dspy.OutputField(desc="what to look up first, in one or two sentences")
    query: SearchQuery = dspy.OutputField(desc="a short keyword search query")


class DecideNextStep(dspy.Signature):
    question: str = dspy.InputField()
    hint: str = dspy.InputField(desc="a private hint; may be empty")
    history: str = dspy.InputField(desc="earlier searches and what they returned")
    think: Thought = dspy.OutputField(desc="what the retrieved information shows, in one or two sentences")
    action: Literal["search", "answer"] = dspy.OutputField(desc="search again, or answer now")
    argument: SearchQuery = dspy.OutputField(desc="the next search query, or the final short answer")


class ExplainSearch(dspy.Signature):
    question: str = dspy.InputField()
    history: str = dspy.InputField(desc="earlier searches and what they returned; may be empty")
    query: str = dspy.InputField(desc="the search the agent runs next")
    think: Thought = dspy.OutputField(
        desc="one full sentence saying what this search looks for and why it helps answer the question, "
        "without guessing the answer"
    )


class WriteFinalAnswer(dspy.Signature):
    question: str = dspy.InputField()
    hint: str = dspy.InputField(desc="a private hint; may be empty")
    history: str = dspy.InputField(desc="earlier searches and what they returned")
    think: Thought = dspy.OutputField(desc="which retrieved passage states the answer, in one sentence")
    answer: ShortAnswer = dspy.OutputField(desc="the final short answer")


class CiteEvidence(dspy.Signature):
    question: str = dspy.InputField()
    answer: str = dspy.InputField(desc="the answer, already known")
    history: str = dspy.InputField(desc="earlier searches and what they returned")
    think: Thought = dspy.OutputField(
        desc="one full sentence naming the answer and the retrieved passage that states it"
    )


class WeakSolver(dspy.Module):
    def __init__(self, mode: Literal["closed_book", "rag"], retriever: Retriever, search: SearchRecipe):
        super().__init__()
        instructions = load_prompt("weak_solver")
        self.mode, self.retriever, self.search = mode, retriever, search
        self.closed_book = dspy.Predict(AnswerClosedBook.with_instructions(instructions))
        self.with_passages = dspy.Predict(AnswerFromPassages.with_instructions(instructions))

    def forward(self, question: str, config: dict) -> dspy.Prediction:
        if self.mode == "closed_book":
            return self.closed_book(question=question, config=config)
        hits = self.retriever.search([question], topk=self.search.top_k)[0]
        passages = observation_text(hits, self.search.max_observation_tokens, self.search.observation_tokenizer)
        return self.with_passages(question=question, passages=passages, config=config)


class StrongSolver(dspy.Module):
    def __init__(self, retriever: Retriever, search: SearchRecipe):
        super().__init__()
        instructions = load_prompt("strong_solver")
        self.retriever, self.search = retriever, search
        self.first = dspy.Predict(PlanFirstSearch.with_instructions(instructions))
        self.next = dspy.Predict(DecideNextStep.with_instructions(instructions))
        self.final = dspy.Predict(WriteFinalAnswer.with_instructions(instructions))
        self.cite = dspy.Predict(CiteEvidence.with_instructions(instructions))
        self.explain = dspy.Predict(ExplainSearch.with_instructions(instructions))

    def _search_step(
        self, think: str, query: str, *, question: str, hint: str, steps: list, config: dict
    ) -> SearchStep:
        hits = self.retriever.search([query], topk=self.search.top_k)[0]
        observation = observation_text(hits, self.search.max_observation_tokens, self.search.observation_tokenizer)
        step = SearchStep(think=think, query=query, observation=observation, hit_ids=[h.id for h in hits])
        if not hint:
            return step
        # The hinted agent chose the query; the kept thought comes from a call without the hint.
        return _with_kept_thought(
            step,
            lambda cfg: self.explain(question=question, history=_history(steps), query=query, config=cfg).think,
            question,
            steps,
            config,
        )

    def forward(
        self,
        question: str,
        hint: str,
        config: dict,
        known_answer: str | None = None,
        known_facts: tuple[str, ...] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> dspy.Prediction:
        """One trajectory. `secrets`: what the hint told that no query may name before an
        observation showed it (`autodata.roles.verifier.secrets_of`); a hinted query that does is
        asked for again, up to `QUERY_TRIES` times, as a kept thought is."""

        def turn_config(turn: int) -> dict:
            return {**config, "rollout_id": f"{config['rollout_id']}:{turn}"}

        def explain_config(turn: int) -> dict:
            return {**config, "rollout_id": f"{config['rollout_id']}:{turn}:explain"}

        def leaks(query: str) -> bool:
            observed = "\n".join(s.observation for s in steps if isinstance(s, SearchStep))
            return any(sub_exact_match(query, [s]) and not sub_exact_match(observed, [s]) for s in secrets)

        steps: list[SearchStep | AnswerStep] = []
        plan = _asked_again_while(
            lambda p: leaks(p.query), lambda cfg: self.first(question=question, hint=hint, config=cfg), turn_config(0)
        )
        steps.append(
            self._search_step(
                plan.think, plan.query, question=question, hint=hint, steps=steps, config=explain_config(0)
            )
        )
        facts = (known_answer,) if known_facts is None else known_facts
        for turn in range(1, self.search.max_turns):
            observed = "\n".join(s.observation for s in steps if isinstance(s, SearchStep))
            found = known_answer is not None and all(sub_exact_match(observed, [f]) for f in facts)
            found = found and (bool(facts) or turn == self.search.max_turns - 1)  # a refusal: after every search
            if found:  # rationalization: the answer is known; the agent cites what it found
                step = _with_kept_thought(
                    AnswerStep(think="", answer=known_answer),
                    lambda cfg: (
                        self.cite(question=question, answer=known_answer, history=_history(steps), config=cfg).think
                    ),
                    question,
                    steps,
                    turn_config(turn),
                )
                steps.append(step)
                break
            if turn == self.search.max_turns - 1:
                final = self.final(question=question, hint=hint, history=_history(steps), config=turn_config(turn))
                steps.append(AnswerStep(think=final.think, answer=final.answer))
                break
            step = _asked_again_while(
                lambda p: p.action == "search" and leaks(p.argument),
                lambda cfg: self.next(question=question, hint=hint, history=_history(steps), config=cfg),
                turn_config(turn),
            )
            if step.action == "answer":
                steps.append(AnswerStep(think=step.think, answer=step.argument))
                break
            steps.append(
                self._search_step(
                    step.think, step.argument, question=question, hint=hint, steps=steps, config=explain_config(turn)
                )
            )
        return dspy.Prediction(trajectory=Trajectory(question=question, steps=steps))


THOUGHT_TRIES = 3  # a kept thought the verifier would reject (ungrounded, not prose) is written again


def _with_kept_thought(step, write, question: str, steps: list, config: dict):
    """`step` with the thought `write(config)` gives, written again (another rollout id and
    sampling seed) up to `THOUGHT_TRIES` times while the verifier's thought rules reject it;
    the last try is kept either way (the verifier then rejects the trajectory)."""
    for attempt in range(THOUGHT_TRIES):
        tried = config if attempt == 0 else retry_config(config, attempt)
        step = step.model_copy(update={"think": write(tried)})
        problem = thought_problem(Trajectory(question=question, steps=[*steps, step]))
        if problem is None or not problem.detail.startswith(f"step {len(steps) + 1}'s"):
            return step
    return step


QUERY_TRIES = 3  # a hinted query naming a secret before any observation showed it is asked for again


def _asked_again_while(bad, ask, config: dict):
    """`ask(config)`, asked again (another rollout id and sampling seed) up to `QUERY_TRIES` times
    while `bad` holds for its reply; the last reply is kept either way (the verifier then rejects)."""
    for attempt in range(QUERY_TRIES):
        reply = ask(config if attempt == 0 else retry_config(config, attempt))
        if not bad(reply):
            return reply
    return reply


def retry_config(config: dict, attempt: int) -> dict:
    """The call config of retry `attempt`: its own rollout id (cache key) and sampling seed."""
    return {**config, **call_config(f"{config['rollout_id']}:retry{attempt}")}


def _history(steps: list[SearchStep | AnswerStep]) -> str:
    return "\n".join(f"Search {i}: {s.query}\nResult {i}: {s.observation}" for i, s in enumerate(steps, start=1))
