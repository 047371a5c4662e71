"""Each stage of the inner loop alone, with scripted roles in place of the LLM ones."""

import ast
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import dspy
import pytest

from autodata import stages
from autodata.items import AcceptedItem, Tags
from autodata.pipeline import FEEDBACK, SeedProcessor
from autodata.recipe import Recipe, SearchRecipe, Strategy
from autodata.roles import Expected, Verifier
from autodata.search.protocol import Hit
from autodata.seeds import HeldOutQuestions, SeedItem
from autodata.stages import (
    CHECKS,
    NO_EVIDENCE,
    STRATEGIES,
    Candidate,
    Problem,
    StrongAttempt,
    Task,
    WeakAttempt,
    accepted_item,
    contamination,
    pick_strategy,
    propose,
    rejection,
    run_solvers,
    screen,
    screening,
    search_evidence,
    strong_hint,
    tag_question,
    verify,
)
from autodata.stages.proposal import UNPARSEABLE
from autodata.trajectory import AnswerStep, SearchStep, Trajectory

HAMLET = Hit(
    id="0", contents='"Hamlet"\nHamlet is a tragedy written by William Shakespeare around 1600, set in Denmark.'
)
KRONBORG = Hit(id="1", contents='"Kronborg"\nKronborg is the castle where Hamlet is set.')
PARIS = Hit(id="2", contents='"Paris"\nParis is the capital and largest city of France, on the river Seine.')
SEED = SeedItem(id="s1", question="who wrote the tragedy hamlet", golden_answers=["William Shakespeare"])
ANSWER = "William Shakespeare"
GOOD = Candidate("s1", 0, "rephrase", "Which playwright wrote the tragedy set in Denmark?", ANSWER, (HAMLET,))


class FakeRetriever:
    """Returns `hits` for every query."""

    def __init__(self, *hits: Hit):
        self.hits, self.queries = list(hits), []

    def search(self, queries, topk):
        self.queries.extend(queries)
        return [self.hits[:topk] for _ in queries]


class FakeRoles:
    """The `Roles` a stage calls: scripted role functions; a role returning None is an unparseable reply."""

    def __init__(self, recipe: Recipe = Recipe(), retriever=None, **roles):
        self.recipe, self.hash, self.retriever = recipe, recipe.content_hash, retriever
        self.asked: list[str] = []
        for name in ("challenger", "weak", "strong", "verifier", "tagger"):
            setattr(self, name, roles.get(name, self._unexpected(name)))

    @staticmethod
    def _unexpected(name):
        def role(**kwargs):
            raise AssertionError(f"the {name} role was called")

        return role

    def ask(self, role, call):
        self.asked.append(role)
        return call()


def trajectory(answer: str = ANSWER, observation: str = HAMLET.contents) -> Trajectory:
    return Trajectory(
        question=GOOD.question,
        steps=[
            SearchStep(think="Look up the tragedy.", query="tragedy Denmark", observation=observation, hit_ids=["0"]),
            AnswerStep(think="The passage names its author.", answer=answer),
        ],
    )


def rollout_index(config: dict) -> int:
    return int(config["rollout_id"].rsplit(":", 1)[1])


# --- evidence ------------------------------------------------------------------------------


def test_the_evidence_pack_puts_the_passages_stating_a_golden_answer_first():
    evidence = search_evidence(FakeRetriever(PARIS, HAMLET), SearchRecipe(), SEED)
    assert evidence.passages == (HAMLET, PARIS) and evidence.answer == ANSWER
    assert evidence[1] == ANSWER  # a NamedTuple: `evidence_pack(seed)[1]` reads as before
    assert search_evidence(FakeRetriever(PARIS), SearchRecipe(), SEED) == ((PARIS,), None)


def test_a_seed_overlapping_a_held_out_question_is_contaminated():
    gate = HeldOutQuestions([SeedItem(id="dev-1", question=SEED.question, golden_answers=["x"])])
    problem = contamination(gate, SEED)
    assert problem.reason == "contaminated_seed" and "'dev-1'" in problem.detail
    assert contamination(None, SEED) is None and NO_EVIDENCE.reason == "no_evidence"


# --- propose -------------------------------------------------------------------------------


def task(strategy: Strategy, *, evidence=(HAMLET, PARIS), feedback: str = "", round_no: int = 2) -> Task:
    return Task(SEED, evidence, ANSWER, strategy, round_no, feedback)


def test_every_strategy_of_a_recipe_has_one_function():
    assert set(STRATEGIES) == set(get_args(Strategy))


def test_keep_asks_the_seed_question_without_any_llm_call():
    roles = FakeRoles()
    proposal = propose(roles, task("keep"))
    assert proposal.problem is None and roles.asked == []
    assert proposal.candidate == Candidate("s1", 2, "keep", "Who wrote the tragedy hamlet?", ANSWER, (HAMLET,))


def test_rephrase_cites_the_passages_the_challenger_names_within_the_pack():
    seen = {}

    def challenger(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(question=f" {GOOD.question} ", answer=f"{ANSWER} ", supporting_passages=[1, 9])

    roles = FakeRoles(challenger=challenger)
    proposal = propose(roles, task("rephrase", feedback=FEEDBACK["too_easy"]))
    assert proposal == stages.Proposal(replace(GOOD, round=2))
    assert roles.asked == ["challenger"] and seen["feedback"] == FEEDBACK["too_easy"]
    assert seen["evidence"].startswith("[1] Hamlet: ") and "\n[2] Paris: " in seen["evidence"]
    assert seen["config"]["rollout_id"] == f"{roles.hash}:s1:2:challenger"


def test_a_rephrase_citing_nothing_or_unparseable_is_rejected_as_invalid():
    nothing = FakeRoles(challenger=lambda **kw: SimpleNamespace(question="Q?", answer="A", supporting_passages=[7]))
    proposal = propose(nothing, task("rephrase"))
    assert proposal.candidate.question == "Q?" and proposal.problem == Problem(
        "invalid", "cites no passage of the evidence pack"
    )
    assert propose(FakeRoles(challenger=lambda **kw: None), task("rephrase")) == UNPARSEABLE
    assert UNPARSEABLE.candidate is None and UNPARSEABLE.problem.reason == "invalid"


def test_multi_hop_writes_about_the_bridge_passage_and_cites_both_hops():
    seen = {}

    def challenger(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(question="Who wrote the play set at Kronborg?", answer=ANSWER, supporting_passages=[2])

    retriever = FakeRetriever(HAMLET, KRONBORG)
    proposal = propose(FakeRoles(retriever=retriever, challenger=challenger), task("multi_hop"))
    c = proposal.candidate
    assert proposal.problem is None and c.passages == (KRONBORG, HAMLET) and c.bridge == "Hamlet" and c.hops == 2
    assert retriever.queries == ["Hamlet"] and "the bridge entity is 'Hamlet'" in seen["strategy"]
    no_bridge = propose(FakeRoles(retriever=FakeRetriever(HAMLET, PARIS)), task("multi_hop"))
    assert no_bridge == stages.Proposal(None, Problem("invalid", "multi_hop: no passage mentions a bridge entity"))


def test_the_strategy_is_drawn_by_weight_reproducibly_and_keep_only_once():
    recipe = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0})
    assert pick_strategy(recipe, recipe.content_hash, "s1", 0, set()) == "keep"
    assert pick_strategy(recipe, recipe.content_hash, "s1", 1, {"keep"}) is None
    mixed = Recipe()
    draws = [pick_strategy(mixed, mixed.content_hash, f"s{i}", 0, set()) for i in range(40)]
    assert draws == [pick_strategy(mixed, mixed.content_hash, f"s{i}", 0, set()) for i in range(40)]
    assert len(set(draws)) > 1


# --- screen --------------------------------------------------------------------------------


def test_a_good_candidate_passes_every_check():
    assert screen(GOOD, []) is None
    assert [check.__name__ for check in CHECKS] == [
        "one_question",
        "short_answer",
        "not_solver_directed",
        "answer_not_in_question",
        "bridge_not_in_question",
        "answer_in_cited_passages",
        "not_a_duplicate",
    ]


@pytest.mark.parametrize(
    ("changes", "earlier", "check", "reason"),
    [
        ({"question": "Who wrote Hamlet? And when?"}, [], "one_question", "invalid"),
        ({"question": "Who wrote it"}, [], "one_question", "invalid"),
        ({"answer": "one two three four five six seven eight nine"}, [], "short_answer", "invalid"),
        ({"question": "Which playwright should the weak solver name?"}, [], "not_solver_directed", "invalid"),
        ({"question": "Did William Shakespeare write the Danish tragedy?"}, [], "answer_not_in_question", "leak"),
        (
            {"strategy": "multi_hop", "bridge": "Hamlet", "question": "Who wrote Hamlet, set at a castle?"},
            [],
            "bridge_not_in_question",
            "leak",
        ),
        ({"passages": (PARIS,)}, [], "answer_in_cited_passages", "unsupported"),
        ({}, ["Which playwright wrote the tragedy set in Denmark?"], "not_a_duplicate", "duplicate"),
    ],
)
def test_each_check_rejects_what_it_names_and_the_first_problem_wins(changes, earlier, check, reason):
    candidate = replace(GOOD, **changes)
    problem = screen(candidate, earlier)
    named = {c.__name__: c for c in CHECKS}
    assert problem is not None and problem.reason == reason and problem == named[check](candidate, earlier)
    assert all(c(candidate, earlier) is None for c in CHECKS[: list(named).index(check)])


def test_a_new_check_is_one_entry_in_checks(monkeypatch):
    def no_castles(c, earlier):
        return Problem("invalid", "asks about a castle") if "castle" in c.question else None

    monkeypatch.setattr(screening, "CHECKS", (*CHECKS, no_castles))
    assert (
        screen(replace(GOOD, question="Which playwright set a tragedy at a castle?"), []).detail
        == "asks about a castle"
    )


# --- solve ---------------------------------------------------------------------------------


ALL_ATTEMPTS = Recipe().with_changes(acceptance={"attempts_per_solver": 3, "early_stop": False})


def test_an_unparseable_strong_reply_is_an_attempt_without_a_trajectory_aligned_with_its_score():
    """Attempt 0 cannot be parsed, 1 and 2 solve it: three attempts, two correct trajectories, in order."""
    solved = {1: trajectory(), 2: trajectory()}
    roles = FakeRoles(
        ALL_ATTEMPTS,
        weak=lambda question, config: SimpleNamespace(answer="I do not know"),
        strong=lambda question, hint, config, known_answer, known_facts=None, secrets=(): (
            SimpleNamespace(trajectory=solved[rollout_index(config)]) if rollout_index(config) in solved else None
        ),
    )
    attempts = run_solvers(roles, GOOD)
    assert attempts.weak == (WeakAttempt(0.0, "I do not know"),) * 3
    assert attempts.strong == (StrongAttempt(0.0, None), StrongAttempt(1.0, solved[1]), StrongAttempt(1.0, solved[2]))
    assert attempts.strong_scores == [0.0, 1.0, 1.0] and len(attempts.strong_scores) == len(attempts.strong)
    assert attempts.correct() == [solved[1], solved[2]] and attempts.correct()[0] is solved[1]
    assert attempts.problem(ALL_ATTEMPTS.acceptance) is None
    item = accepted_item(ALL_ATTEMPTS, roles.hash, GOOD, attempts, Tags(), attempts.correct()[0])
    assert item.strong.scores == [0.0, 1.0, 1.0] and item.trajectory is solved[1]


def test_a_strong_answer_no_search_retrieved_scores_zero_and_keeps_its_trajectory():
    ungrounded = trajectory(observation=PARIS.contents)
    roles = FakeRoles(
        ALL_ATTEMPTS,
        weak=lambda question, config: None,  # unparseable: scored 0
        strong=lambda question, hint, config, known_answer, known_facts=None, secrets=(): SimpleNamespace(
            trajectory=ungrounded
        ),
    )
    attempts = run_solvers(roles, GOOD)
    assert attempts.weak_scores == [0.0] * 3 and attempts.strong == (StrongAttempt(0.0, ungrounded),) * 3
    assert attempts.correct() == [] and attempts.problem(ALL_ATTEMPTS.acceptance) == Problem(
        "too_hard", "strong solver scored 0/3"
    )


def test_early_stopping_asks_only_the_attempts_the_rule_needs():
    weak_asked = []

    def weak(question, config):
        weak_asked.append(rollout_index(config))
        return SimpleNamespace(answer=ANSWER)

    attempts = run_solvers(FakeRoles(Recipe(), weak=weak), GOOD)  # weak 2 of 3 right: too easy, no strong call
    assert weak_asked == [0, 1] and attempts.strong == () and attempts.problem(Recipe().acceptance).reason == "too_easy"


def test_the_hint_follows_the_recipe():
    answer, titles, none = (Recipe().with_changes(hint_mode=m) for m in ("answer", "titles", "none"))
    assert strong_hint(answer, GOOD).startswith("The answer is 'William Shakespeare'. The article 'Hamlet'")
    assert strong_hint(titles, GOOD) == "Useful articles: Hamlet" and strong_hint(none, GOOD) == ""


# --- verify, tag, assemble -----------------------------------------------------------------


def test_the_verifier_result_names_its_reason_and_detail(bm25_index):
    verifier = Verifier("judge", bm25_index, SearchRecipe(), llm_judge=False)
    no_search = Trajectory(question="q", steps=[AnswerStep(think="I know it well.", answer=ANSWER)])
    result = verifier(question=GOOD.question, expected=Expected.fact(ANSWER), trajectories=[no_search], config={})
    assert (result.trajectory, result.reason, result.detail) == (None, "unverified", "no search: not search-augmented")
    roles = FakeRoles(verifier=verifier)
    assert verify(roles, GOOD, [no_search]) == Problem("unverified", "no search: not search-augmented")


def test_verify_returns_the_trajectory_kept_or_the_problem():
    kept = trajectory()
    keeps = FakeRoles(verifier=lambda **kw: dspy.Prediction(trajectory=kw["trajectories"][0], reason=None, detail=None))
    assert verify(keeps, GOOD, [kept]) is kept
    leaks = FakeRoles(verifier=lambda **kw: dspy.Prediction(trajectory=None, reason="hint_leak", detail="told"))
    assert verify(leaks, GOOD, [kept]) == Problem("hint_leak", "told")
    unparseable = FakeRoles(verifier=lambda **kw: None)
    assert verify(unparseable, GOOD, [kept]) == Problem("unverified", "the judge's reply could not be parsed")


def test_the_type_is_the_strategys_and_the_tagger_adds_checked_processing_tags():
    tags = {"needs_search": True, "evidence_scope": "open_retrieval"}
    sources = ["encyclopedia", " ", "./test/1357426908.json", "https://x.org", "news archive"]
    roles = FakeRoles(tagger=lambda question, config: dspy.Prediction(**tags, recommended_sources=sources))
    assert tag_question(roles, GOOD) == Tags(
        task_type="simple_fact", **tags, recommended_sources=["encyclopedia", "news archive"]
    )
    two_hops = replace(GOOD, strategy="multi_hop", bridge="Hamlet", passages=(KRONBORG, HAMLET))
    assert tag_question(roles, two_hops).task_type == "multi_hop_composition"
    refusal = replace(GOOD, strategy="insufficient_evidence")
    assert tag_question(roles, refusal).task_type == "insufficient_evidence"
    only_paths = FakeRoles(tagger=lambda question, config: dspy.Prediction(**tags, recommended_sources=[""]))
    assert tag_question(only_paths, GOOD).recommended_sources is None
    assert tag_question(FakeRoles(tagger=lambda question, config: None), GOOD) == Tags(task_type="simple_fact")


def test_a_seed_rejection_keeps_its_nulls_and_a_round_rejection_its_candidate():
    seed_level = rejection("h", "s3", NO_EVIDENCE)
    assert seed_level.line().startswith('{"seed_id": "s3", "round": null, "strategy": null, "reason": "no_evidence"')
    row = rejection("h", "s1", Problem("leak", "x"), candidate=GOOD, round_no=0, strategy="rephrase")
    assert (row.question, row.answer, row.round, row.strategy) == (GOOD.question, ANSWER, 0, "rephrase")


def test_an_item_is_written_with_the_fields_of_the_kept_runs():
    golden = Path(__file__).parent / "fixtures" / "golden_run" / "default" / "trajectories.jsonl"
    old = next(AcceptedItem.read(golden))
    attempts = stages.Attempts("hint", (WeakAttempt(0.0),), (StrongAttempt(1.0, trajectory()),))
    item = accepted_item(Recipe(), "h", GOOD, attempts, Tags(), trajectory())
    assert list(item.model_dump()) == list(old.model_dump()) and item.id == "s1-r0" and item.bridge is None


# --- the driver ----------------------------------------------------------------------------


def test_the_driver_feeds_a_rejected_rounds_reason_to_the_next_round(bm25_index):
    """Round 0 is too easy; round 1's challenger hears why, and its question is accepted."""
    recipe = Recipe().with_changes(strategies={"keep": 0, "rephrase": 1, "multi_hop": 0}, max_rounds=3)
    processor = SeedProcessor(recipe, bm25_index, llms=None)
    feedback = []
    questions = ["Which playwright wrote the tragedy set in Denmark?", "Who is the author of the Danish prince play?"]

    def challenger(**kwargs):
        feedback.append(kwargs["feedback"])
        return SimpleNamespace(question=questions[len(feedback) - 1], answer=ANSWER, supporting_passages=[1])

    def weak(question, config):  # knows the first question's answer only
        return SimpleNamespace(answer=ANSWER if question == questions[0] else "Christopher Marlowe")

    processor._as = lambda role, call: call()
    processor.challenger, processor.weak = challenger, weak
    processor.strong = lambda question, hint, config, known_answer, known_facts=None, secrets=(): SimpleNamespace(
        trajectory=trajectory()
    )
    processor.verifier = lambda **kw: dspy.Prediction(trajectory=kw["trajectories"][0], reason=None, detail=None)
    processor.tagger = lambda question, config: None
    result = processor.process(SEED)
    assert feedback == ["", FEEDBACK["too_easy"]]
    assert [(r.round, r.reason, r.question) for r in result.rejections] == [(0, "too_easy", questions[0])]
    assert [(i.round, i.question, i.tags) for i in result.items] == [(1, questions[1], Tags(task_type="simple_fact"))]
    assert result.accepted == [result.items[0].model_dump()] and result.rejected[0]["reason"] == "too_easy"


def test_a_seed_without_evidence_costs_no_llm_call(bm25_index):
    processor = SeedProcessor(Recipe(), bm25_index, llms=None)
    processor._as = lambda role, call: pytest.fail(f"{role} was called")
    seed = SeedItem(id="s3", question="what is the airspeed of an unladen swallow", golden_answers=["11 m/s"])
    result = processor.process(seed)
    assert result.items == [] and [r.reason for r in result.rejections] == ["no_evidence"]


# --- size ----------------------------------------------------------------------------------


def test_no_function_of_the_inner_loop_is_over_60_lines():
    root = Path(__file__).parents[1] / "autodata"
    for path in [root / "pipeline.py", *sorted((root / "stages").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}:{node.lineno} {node.name} is {length} lines"
