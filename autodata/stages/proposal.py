"""Stage 2: a candidate question for the round, by the round's strategy.

`keep` asks the seed question as it is; the others have the challenger write a question from the
evidence: `rephrase` and `multi_hop` ask for a fact, and the task types beyond lookup ask for a
refusal (`insufficient_evidence`), a premise correction (`false_premise`), a conflict report
(`conflicting_evidence`), a value with its date (`timely`) or each reading's value
(`scope_ambiguity`), in the fixed forms of `autodata.answers`, or ask what one named article says
(`document_based`). Each checks here what only its own reply shows (the false value is in the
question, the two values come from two passages, ...); `screening` checks what all share.
A strategy is one function from a `Task` to a `Proposal`, listed in `STRATEGIES`: adding one
touches this stage (and the names in `autodata.recipe.Strategy` and `stages.base.TASK_TYPES`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

import dspy

from autodata.answers import (
    REFUSAL,
    as_of,
    conflict_report,
    content_words,
    normalize_answer,
    premise_correction,
    scope_report,
    split_as_of,
    split_readings,
    sub_exact_match,
)
from autodata.llm.dspy_engine import int_seed
from autodata.recipe import Recipe, Strategy
from autodata.search.protocol import Hit, article_name
from autodata.seeds import SeedItem, question_similarity
from autodata.stages.base import Candidate, Problem, Roles, as_question, number_passages, rollout, title_of

STRATEGY_GUIDES: dict[Strategy, str] = {
    "rephrase": "Rephrase: ask for the same answer as the seed question with new wording, using facts stated in "
    "the passages. Do not copy the seed question.",
    "multi_hop": "Multi-hop: the bridge entity is '{bridge}'. Describe it with facts from passage [1] without "
    "writing its name, and ask for the fact about it that passage [2] states.",
    "insufficient_evidence": "Insufficient evidence: ask about '{topic}' for one specific fact (a date, number, "
    "name or place) that none of the passages states. Answer with what you believe the answer is, or 'unknown'.",
    "false_premise": "False premise: passage [1] states '{answer}'. Write a question that wrongly presupposes another "
    "value in place of '{answer}' (a wrong year, number, name or place); answer with the wrong value you wrote.",
    "conflicting_evidence": "Conflicting evidence: find two passages that give different values for the same "
    "attribute of the same thing. Ask for that attribute; answer with both values separated by ';' and cite both "
    "passages.",
    "timely": "Timely: ask for a fact that changes over time (who holds an office, a record, a count, the latest "
    "of something) that a passage states together with its date. Answer as 'VALUE (as of DATE)', both copied "
    "from that passage.",
    "scope_ambiguity": "Scope ambiguity: find something the passages give two values for under two readings or "
    "measures (the city or its metropolitan area, net profit or adjusted profit, the film or the novel). Ask for it "
    "without saying which reading you mean; answer as 'VALUE1 (READING1); VALUE2 (READING2)', each value and "
    "reading copied from a passage, and cite those passages.",
    "document_based": "Document-based: ask what the article '{document}' (passage [1]) says about one fact it "
    "states. Answer with that fact, copied from passage [1].",
}
UNKNOWN = {"", "unknown", normalize_answer(REFUSAL)}  # a challenger's guess that guesses nothing


@dataclass(frozen=True)
class Task:
    """What one round asks for: a question about `seed` by `strategy`, grounded in `evidence`."""

    seed: SeedItem
    evidence: tuple[Hit, ...]  # the seed's evidence pack (`Evidence.passages`)
    answer: str  # the golden answer the evidence states (`Evidence.answer`)
    strategy: Strategy
    round: int
    feedback: str  # what was wrong with the previous round's candidate; empty at first

    @property
    def stating(self) -> tuple[Hit, ...]:
        """The passages of the evidence that state the answer."""
        return tuple(h for h in self.evidence if sub_exact_match(h.contents, [self.answer]))

    @property
    def on_topic(self) -> Hit:
        """The stating passage sharing the most of the seed question's content words (the first, on
        a tie): a short answer such as a number is often stated by a passage on another topic."""
        asked = content_words(self.seed.question)
        return max(self.stating, key=lambda h: len(asked & content_words(h.contents)))


@dataclass(frozen=True)
class Proposal:
    """The round's candidate, or why there is none; a candidate with a problem is rejected as it is."""

    candidate: Candidate | None
    problem: Problem | None = None


UNPARSEABLE = Proposal(None, Problem("invalid", "the challenger's reply could not be parsed"))


def pick_strategy(
    recipe: Recipe, recipe_hash: str, seed_id: str, round_no: int, tried: Collection[str]
) -> Strategy | None:
    """The round's strategy, drawn by the recipe's weights (`keep` at most once); None when
    none is left. `recipe_hash`: the recipe's content hash (the draw's seed)."""
    weights = {s: w for s, w in recipe.strategies.weights().items() if w > 0 and not (s == "keep" and s in tried)}
    if not weights:
        return None
    rng = random.Random(int_seed(f"{recipe_hash}:{seed_id}:{round_no}"))
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def propose(roles: Roles, task: Task) -> Proposal:
    return STRATEGIES[task.strategy](roles, task)


def keep(roles: Roles, task: Task) -> Proposal:
    """The seed question itself, with the first two passages stating its answer."""
    question = as_question(task.seed.question)
    return Proposal(Candidate(task.seed.id, task.round, "keep", question, task.answer, task.stating[:2]))


def rephrase(roles: Roles, task: Task) -> Proposal:
    """The challenger's question on the whole evidence pack, citing the passages it names."""
    passages = task.evidence
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["rephrase"])
    if reply is None:
        return UNPARSEABLE
    cited = cited_passages(reply, passages)
    candidate = Candidate(task.seed.id, task.round, "rephrase", reply.question.strip(), reply.answer.strip(), cited)
    if not cited:
        return Proposal(candidate, Problem("invalid", "cites no passage of the evidence pack"))
    return Proposal(candidate)


def multi_hop(roles: Roles, task: Task) -> Proposal:
    """Two hops: a passage mentioning the answer passage's title (the bridge entity), then the answer
    passage; the challenger describes the bridge without naming it. Both passages are cited."""
    answer_passage = task.stating[0]
    first = find_bridge(roles, answer_passage)
    if first is None:
        return Proposal(None, Problem("invalid", "multi_hop: no passage mentions a bridge entity"))
    passages, bridge = (first, answer_passage), title_of(answer_passage)
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["multi_hop"].format(bridge=bridge))
    if reply is None:
        return UNPARSEABLE
    question, answer = reply.question.strip(), reply.answer.strip()
    return Proposal(Candidate(task.seed.id, task.round, "multi_hop", question, answer, passages, bridge))


def find_bridge(roles: Roles, answer_passage: Hit) -> Hit | None:
    """A passage about another topic that mentions the answer passage's title."""
    bridge = title_of(answer_passage)
    for hit in roles.retriever.search([bridge], topk=roles.recipe.search.evidence_passages)[0]:
        if hit.id != answer_passage.id and sub_exact_match(hit.text, [bridge]):
            return hit
    return None


def cited_passages(reply: dspy.Prediction, passages: tuple[Hit, ...]) -> tuple[Hit, ...]:
    """The passages the challenger's reply cites by number, each once, in its order."""
    return tuple(passages[n - 1] for n in dict.fromkeys(reply.supporting_passages) if 1 <= n <= len(passages))


def challenge(roles: Roles, task: Task, passages: tuple[Hit, ...], guide: str) -> dspy.Prediction | None:
    """The challenger's reply (question, answer, supporting_passages) on `passages`; None if unparseable."""
    return roles.ask(
        "challenger",
        lambda: roles.challenger(
            strategy=guide,
            evidence=number_passages(passages),
            seed_question=task.seed.question,
            seed_answer=task.answer,
            feedback=task.feedback,
            config=rollout(roles.hash, task.seed.id, task.round, "challenger"),
        ),
    )


def insufficient_evidence(roles: Roles, task: Task) -> Proposal:
    """A question on the evidence's topic for a fact the corpus does not hold: a real search for
    it retrieves no passage stating the challenger's guess. The answer is the refusal; the
    solvers' guesses are checked the same way when the trajectory is verified."""
    first = task.on_topic  # a property that stems every stating passage: once, not per passage
    passages = (first, *(h for h in task.evidence if h != first))
    topic = article_name(title_of(passages[0]))
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["insufficient_evidence"].format(topic=topic))
    if reply is None:
        return UNPARSEABLE
    question, guess = reply.question.strip(), reply.answer.strip()
    absent = () if normalize_answer(guess) in UNKNOWN else (guess,)
    candidate = Candidate(
        task.seed.id, task.round, "insufficient_evidence", question, REFUSAL, passages[:1], facts=(), absent=absent
    )
    if not sub_exact_match(question, [topic]):
        return Proposal(candidate, Problem("invalid", f"insufficient_evidence: the question does not name {topic!r}"))
    if question_similarity(question, task.seed.question) >= 0.5:
        return Proposal(candidate, Problem("answerable", "insufficient_evidence: it asks the seed question again"))
    hits = roles.retriever.search([question], topk=roles.recipe.search.evidence_passages)[0]
    if absent and (stating := next((h for h in hits if sub_exact_match(h.contents, absent)), None)):
        return Proposal(
            candidate, Problem("answerable", f"a search retrieves {title_of(stating)!r}, stating {guess!r}")
        )
    return Proposal(candidate)


def false_premise(roles: Roles, task: Task) -> Proposal:
    """A question presupposing a value the answer passage contradicts; the answer corrects it."""
    passages = (task.on_topic,)
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["false_premise"].format(answer=task.answer))
    if reply is None:
        return UNPARSEABLE
    question, wrong = reply.question.strip(), reply.answer.strip()
    candidate = Candidate(
        task.seed.id, task.round, "false_premise", question, premise_correction(task.answer), passages,
        facts=(task.answer,),
    )  # fmt: skip
    if normalize_answer(wrong) in UNKNOWN or normalize_answer(wrong) == normalize_answer(task.answer):
        return Proposal(candidate, Problem("invalid", f"false_premise: {wrong!r} is not another value"))
    if not sub_exact_match(question, [wrong]):
        return Proposal(candidate, Problem("invalid", f"false_premise: the question does not presuppose {wrong!r}"))
    if sub_exact_match(passages[0].contents, [wrong]):
        return Proposal(candidate, Problem("invalid", f"false_premise: the passage states {wrong!r} too"))
    return Proposal(candidate)


def conflicting_evidence(roles: Roles, task: Task) -> Proposal:
    """A question whose attribute two cited passages give different values for, each value stated
    by one of them and not the other; the answer reports both (in either order)."""
    passages = task.evidence
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["conflicting_evidence"])
    if reply is None:
        return UNPARSEABLE
    values = [v.strip() for v in reply.answer.split(";")]
    cited = cited_passages(reply, passages)
    first, second = (values + ["", ""])[:2]
    candidate = Candidate(
        task.seed.id, task.round, "conflicting_evidence", reply.question.strip(), conflict_report(first, second),
        cited, facts=(first, second), alternatives=(conflict_report(second, first),),
    )  # fmt: skip
    if len(values) != 2 or not first or not second or normalize_answer(first) == normalize_answer(second):
        return Proposal(candidate, Problem("invalid", "conflicting_evidence: the answer is not two values 'A; B'"))

    def only(value: str, other: str) -> bool:
        return any(sub_exact_match(h.contents, [value]) and not sub_exact_match(h.contents, [other]) for h in cited)

    if not (only(first, second) and only(second, first)):
        return Proposal(candidate, Problem("unsupported", "no two cited passages each state one of the two values"))
    return Proposal(candidate)


def timely(roles: Roles, task: Task) -> Proposal:
    """A time-dependent fact with the date a cited passage gives it: 'VALUE (as of DATE)'."""
    passages = task.evidence
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["timely"])
    if reply is None:
        return UNPARSEABLE
    cited = cited_passages(reply, passages)
    parts = split_as_of(reply.answer)
    value, time = parts or (reply.answer.strip(), "")
    candidate = Candidate(
        task.seed.id, task.round, "timely", reply.question.strip(), as_of(value, time), cited, facts=(value, time)
    )
    if parts is None or not re.search(r"\b\d{4}\b", time):
        return Proposal(candidate, Problem("invalid", "timely: the answer is not 'VALUE (as of DATE)' with a year"))
    if not any(sub_exact_match(h.contents, [value]) and sub_exact_match(h.contents, [time]) for h in cited):
        return Proposal(candidate, Problem("unsupported", "timely: no cited passage states the value with its date"))
    return Proposal(candidate)


def scope_ambiguity(roles: Roles, task: Task) -> Proposal:
    """A question two readings of which have different values, each stated with its reading by a
    cited passage; the question names neither reading, and the answer gives both (in either order)."""
    passages = task.evidence
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["scope_ambiguity"])
    if reply is None:
        return UNPARSEABLE
    cited, question = cited_passages(reply, passages), reply.question.strip()
    readings = split_readings(reply.answer) or []
    values = tuple(value for value, _ in readings)
    candidate = Candidate(
        task.seed.id, task.round, "scope_ambiguity", question, scope_report(readings), cited, facts=values,
        alternatives=(scope_report(readings[::-1]),),
    )  # fmt: skip
    if len(readings) != 2 or len({normalize_answer(v) for v in values}) != 2:
        return Proposal(candidate, Problem("invalid", "scope_ambiguity: the answer is not 'V1 (R1); V2 (R2)'"))
    if len({normalize_answer(r) for _, r in readings}) != 2:
        return Proposal(candidate, Problem("invalid", "scope_ambiguity: the two readings are one"))
    if named := next((r for _, r in readings if sub_exact_match(question, [r])), None):
        return Proposal(candidate, Problem("invalid", f"scope_ambiguity: the question names the reading {named!r}"))
    for value, reading in readings:
        if not any(
            sub_exact_match(h.contents, [value]) and content_words(reading) <= content_words(h.contents) for h in cited
        ):
            return Proposal(
                candidate, Problem("unsupported", f"scope_ambiguity: no cited passage states {value!r} for {reading!r}")
            )
    return Proposal(candidate)


def document_based(roles: Roles, task: Task) -> Proposal:
    """What one article, named in the question, says: the answer rests on a passage of that article
    (the verifier checks the kept trajectory's answer passage is one), whatever other passages say."""
    passages = (task.on_topic,)
    document = title_of(passages[0])
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["document_based"].format(document=document))
    if reply is None:
        return UNPARSEABLE
    question, answer = according_to(document, reply.question.strip()), reply.answer.strip()
    candidate = Candidate(task.seed.id, task.round, "document_based", question, answer, passages, document=document)
    if not answer or not sub_exact_match(passages[0].contents, [answer]):
        return Proposal(candidate, Problem("unsupported", f"document_based: {document!r} does not state {answer!r}"))
    return Proposal(candidate)


def according_to(document: str, question: str) -> str:
    """The question asked of the named article: 'According to the article "T", who ...?'."""
    if sub_exact_match(question, [f"according to {document}", f"according to article {document}"]):
        return question
    if _OPENING_WORD.match(question):  # a question word, not a name: lower-cased after the comma
        question = question[:1].lower() + question[1:]
    return f'According to the article "{document}", {question}'


_OPENING_WORD = re.compile(
    r"(what|which|who|whom|whose|when|where|why|how|in|on|at|for|from|by|is|are|was|were|did|does|do)\b", re.IGNORECASE
)


STRATEGIES: dict[Strategy, Callable[[Roles, Task], Proposal]] = {
    "keep": keep,
    "rephrase": rephrase,
    "multi_hop": multi_hop,
    "insufficient_evidence": insufficient_evidence,
    "false_premise": false_premise,
    "conflicting_evidence": conflicting_evidence,
    "timely": timely,
    "scope_ambiguity": scope_ambiguity,
    "document_based": document_based,
}
