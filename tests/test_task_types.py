"""The task types beyond fact lookup, end to end on the scripted endpoint: each strategy's item is
accepted when it passes its rule, and a crafted bad candidate for each rule is rejected with its
reason. Also the verification rules every type shares: grounded thoughts, support in the passage
the answer rests on, real multi-hop, paraphrases of held-out questions."""

import json

import pytest

from autodata.answers import (
    REFUSAL,
    answer_form,
    as_of,
    conflict_report,
    facts_of,
    premise_correction,
    scope_report,
    split_as_of,
    split_readings,
)
from autodata.recipe import Recipe
from autodata.roles import Expected, check_trajectory
from autodata.roles.verifier import thought_problem
from autodata.search import BM25Index
from autodata.search.protocol import format_hits
from autodata.seeds import HeldOutQuestions, SeedItem
from autodata.settings import load_settings
from autodata.stages import Candidate, paraphrase
from autodata.trajectory import AnswerStep, SearchStep, Trajectory
from autodata.workspace import Workspace
from tests.conftest import write_corpus

FACTS = [
    ("Victor Hugo", "Victor Hugo was a French writer born in 1802 in Besancon."),
    ("Les Miserables", "Les Miserables is an 1862 novel by Victor Hugo."),
    ("Hugo family", "Some parish records give 1803 as the year Victor Hugo was born, a later hand notes."),
    ("Mayor of Paris", "As of 2014, the mayor of Paris is Anne Hidalgo, the first woman in the office."),
    ("Olympic Games", "The modern Olympic Games were first held in Athens in 1896."),
    ("Paris", "The city of Paris has 2.1 million residents, and its metropolitan area has 12 million residents."),
]
HUGO = [{"id": "s1", "question": "when was victor hugo born", "golden_answers": ["1802"]}]
MAYOR = [{"id": "s2", "question": "who is the mayor of paris", "golden_answers": ["Anne Hidalgo"]}]
PARIS = [{"id": "s3", "question": "how many residents does the city of paris have", "golden_answers": ["2.1 million"]}]


@pytest.fixture
def types_world(tmp_path, monkeypatch, scripted_roles):
    index = BM25Index.build(
        write_corpus(tmp_path / "types.jsonl", FACTS), tmp_path / "types-index", show_progress=False
    )
    monkeypatch.setenv("AUTODATA_RETRIEVER__INDEX_DIR", str(index.folder))
    return index


def synthesize(tmp_path, strategy: str, seeds=HUGO, **changes) -> dict:
    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    strategies = {"keep": 0, "rephrase": 0, "multi_hop": 0, strategy: 1}
    recipe = Recipe().with_changes(strategies=strategies, max_rounds=1, **changes)
    with Workspace(load_settings()) as ws:
        report = ws.synthesize(tmp_path / "out", recipe=recipe, seeds=seeds_file, show_progress=False)
    read = lambda name: [json.loads(x) for x in (tmp_path / "out" / name).read_text().splitlines()]
    return {
        "manifest": report.manifest,
        "items": read("trajectories.jsonl"),
        "rejected": read("rejected.jsonl"),
        "midtrain": read("midtrain.jsonl"),
        "sft": json.loads((tmp_path / "out" / "sft_dataset.json").read_text()),
    }


def test_the_fixed_answer_forms_are_recognised():
    assert answer_form(REFUSAL) == "refusal" and answer_form("Insufficient evidence.") == "refusal"
    assert answer_form(premise_correction("1802")) == "correction"
    assert answer_form(conflict_report("1802", "1803")) == "conflict"
    assert answer_form("1802") == answer_form("insufficient") == answer_form(None) == "fact"
    assert split_as_of(as_of("Anne Hidalgo", "2014")) == ("Anne Hidalgo", "2014") and split_as_of("Paris") is None
    scoped = scope_report([("2.1 million", "city"), ("12 million", "metropolitan area")])
    assert answer_form(scoped) == "scope" and facts_of(scoped) == ("2.1 million", "12 million")
    assert split_readings(scoped) == [("2.1 million", "city"), ("12 million", "metropolitan area")]
    assert split_readings("2.1 million; 12 million") is None


def test_insufficient_evidence_searches_finds_nothing_and_refuses(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "What shoe size did Victor Hugo wear?"
    scripted_roles.challenger_answer = "44"  # the challenger's guess: no passage states it
    scripted_roles.strong_queries = ("Victor Hugo shoe size", "Victor Hugo feet", "Hugo shoes worn")
    result = synthesize(tmp_path, "insufficient_evidence")
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = result["items"][0]
    assert item["answer"] == REFUSAL and item["tags"]["task_type"] == "insufficient_evidence"
    assert len(item["trajectory"]["steps"]) == 4  # every search it could make, then the refusal
    assert result["sft"][0]["conversations"][-1]["value"].endswith("<answer> insufficient evidence </answer>")
    assert result["midtrain"][0]["judgement"]["verdict"] == "insufficient"


def test_an_insufficient_evidence_question_a_search_answers_is_rejected(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "In which town was Victor Hugo born?"
    scripted_roles.challenger_answer = "Besancon"  # the corpus states it
    result = synthesize(tmp_path, "insufficient_evidence")
    assert result["manifest"]["rejections"] == {"answerable": 1}
    assert "stating 'Besancon'" in result["rejected"][0]["detail"]


def test_a_false_premise_is_corrected_from_the_passage(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "In which city was Victor Hugo born in 1805?"
    scripted_roles.challenger_answer = "1805"  # the false value the question presupposes
    result = synthesize(tmp_path, "false_premise")
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = result["items"][0]
    assert item["answer"] == premise_correction("1802") and item["tags"]["task_type"] == "false_premise"
    assert result["midtrain"][0]["judgement"]["verdict"] == "refuted"


@pytest.mark.parametrize(
    "question, wrong, detail",
    [
        ("In which city was Victor Hugo born?", "1805", "does not presuppose '1805'"),
        ("In which city was Victor Hugo born in 1802?", "1802", "is not another value"),
    ],
)
def test_a_false_premise_that_is_not_one_is_rejected(types_world, scripted_roles, tmp_path, question, wrong, detail):
    scripted_roles.challenger_question, scripted_roles.challenger_answer = question, wrong
    result = synthesize(tmp_path, "false_premise")
    assert result["manifest"]["rejections"] == {"invalid": 1} and detail in result["rejected"][0]["detail"]


def test_conflicting_evidence_reports_both_values(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "In what year was the French writer Victor Hugo born?"
    scripted_roles.challenger_answer, scripted_roles.challenger_passages = "1802; 1803", (1, 2)
    result = synthesize(tmp_path, "conflicting_evidence")
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = result["items"][0]
    assert item["answer"] == conflict_report("1802", "1803") and item["tags"]["task_type"] == "conflicting_evidence"
    assert result["midtrain"][0]["judgement"]["verdict"] == "conflicting"


def test_a_conflict_one_passage_states_is_rejected(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "In what year was the French writer Victor Hugo born?"
    scripted_roles.challenger_answer, scripted_roles.challenger_passages = "1802; 1803", (1,)
    result = synthesize(tmp_path, "conflicting_evidence")
    assert result["manifest"]["rejections"] == {"unsupported": 1}


def test_a_timely_fact_carries_the_evidence_date(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "Who is the mayor of Paris?"
    scripted_roles.challenger_answer = "Anne Hidalgo (as of 2014)"
    result = synthesize(tmp_path, "timely", seeds=MAYOR)
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    assert result["items"][0]["answer"] == as_of("Anne Hidalgo", "2014")
    assert result["items"][0]["tags"]["task_type"] == "timely_fact"


def test_a_timely_answer_without_a_date_is_rejected(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "Who is the mayor of Paris?"
    scripted_roles.challenger_answer = "Anne Hidalgo (as of now)"
    result = synthesize(tmp_path, "timely", seeds=MAYOR)
    assert result["manifest"]["rejections"] == {"invalid": 1} and "with a year" in result["rejected"][0]["detail"]


def test_an_ambiguous_scope_is_answered_for_each_reading(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "How many residents does Paris have?"
    scripted_roles.challenger_answer = "2.1 million (city of Paris); 12 million (metropolitan area)"
    result = synthesize(tmp_path, "scope_ambiguity", seeds=PARIS)
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = result["items"][0]
    assert item["answer"] == "ambiguous scope: 2.1 million (city of Paris); 12 million (metropolitan area)"
    assert item["tags"]["task_type"] == "scope_ambiguity"
    midtrain = result["midtrain"][0]
    assert midtrain["judgement"]["verdict"] == "depends_on_scope"
    assert midtrain["conflict_resolution"]["rule"] == "answer each reading separately"


@pytest.mark.parametrize(
    "question, answer, reason, detail",
    [
        (
            "How many residents does the metropolitan area of Paris have?",
            "2.1 million (city of Paris); 12 million (metropolitan area)",
            "invalid",
            "names the reading 'metropolitan area'",
        ),
        (
            "How many residents does Paris have?",
            "2.1 million (city of Paris); 12 million (greater region)",
            "unsupported",
            "no cited passage states '12 million' for 'greater region'",
        ),
        ("How many residents does Paris have?", "2.1 million; 12 million", "invalid", "is not 'V1 (R1); V2 (R2)'"),
    ],
)
def test_a_scope_that_is_not_ambiguous_or_not_stated_is_rejected(
    types_world, scripted_roles, tmp_path, question, answer, reason, detail
):
    scripted_roles.challenger_question, scripted_roles.challenger_answer = question, answer
    result = synthesize(tmp_path, "scope_ambiguity", seeds=PARIS)
    assert result["manifest"]["rejections"] == {reason: 1} and detail in result["rejected"][0]["detail"]


def test_a_document_based_question_names_its_article_and_rests_on_it(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question = "When was Victor Hugo born?"
    result = synthesize(tmp_path, "document_based")
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = result["items"][0]
    assert item["question"] == 'According to the article "Victor Hugo", when was Victor Hugo born?'
    assert item["answer"] == "1802" and item["tags"]["task_type"] == "document_based"


def test_a_document_based_answer_the_article_does_not_state_is_rejected(types_world, scripted_roles, tmp_path):
    scripted_roles.challenger_question, scripted_roles.challenger_answer = "When was Victor Hugo born?", "1803"
    result = synthesize(tmp_path, "document_based")
    assert result["manifest"]["rejections"] == {"unsupported": 1}
    assert "'Victor Hugo' does not state '1803'" in result["rejected"][0]["detail"]


def test_a_document_based_answer_from_another_article_is_unsupported(types_world):
    question = 'According to the article "Hugo family", when was Victor Hugo born?'
    made = Trajectory(
        question=question,
        steps=steps(
            types_world,
            ("victor hugo born", "I look for his birth."),
            answer="1802",
            final="The passage gives the year Victor Hugo was born.",
        ),
    )
    expected = Expected.fact("1802", document="Hugo family")
    problem = check_trajectory(made, expected, types_world, Recipe().search)
    assert problem == (
        "unsupported",
        "the last search, which the answer rests on, retrieved no passage of 'Hugo family' stating it",
    )
    assert check_trajectory(made, Expected.fact("1802", document="Victor Hugo"), types_world, Recipe().search) is None


# --- the rules every type shares, on hand-made trajectories ----------------------------------


def steps(index, *queries_and_thoughts, answer="Athens", final="The passage names the city of the first games."):
    made = []
    for query, think in queries_and_thoughts:
        hits = index.search([query], topk=3)[0]
        made.append(SearchStep(think=think, query=query, observation=format_hits(hits), hit_ids=[h.id for h in hits]))
    return [*made, AnswerStep(think=final, answer=answer)]


def test_an_ungrounded_or_unreadable_thought_is_rejected(types_world):
    search = Recipe().search
    question = "Where were the first modern Olympic Games held?"

    def check(think, final="The passage names the city of the first games."):
        made = Trajectory(question=question, steps=steps(types_world, ("modern olympic games", think), final=final))
        return check_trajectory(made, Expected.fact("Athens"), types_world, search)

    assert check("I look for the first modern games.") is None
    assert check("I look up the games, first held in 1900.") == (
        "ungrounded_thought",
        "step 1's thought states '1900', which nothing it saw holds",
    )
    assert check("I recall that Pierre de Coubertin founded them.").reason == "ungrounded_thought"
    assert check("The answer is probably a Greek city.").reason == "ungrounded_thought"
    assert check("I look it up.", final="They were held in 1896 by Coubertin.").reason == "ungrounded_thought"
    assert check("I look it up.", final="They were first held in 1896, so the city follows.") is None  # seen
    hyphenated = Trajectory(
        question="Which novel has the whaling captain Ahab?",
        steps=[
            SearchStep(
                think="I look for the novel.",
                query="ahab",
                observation='Doc 1(Title: "Moby-Dick") Moby-Dick.',
                hit_ids=[],
            ),
            AnswerStep(think="The passage names the novel Moby-Dick.", answer="Moby-Dick"),
        ],
    )
    assert thought_problem(hyphenated) is None  # "Moby" and "Dick" were seen, as "Moby-Dick"
    assert check("]]]] #response: [1.4,0.82,1.6,true]").reason == "bad_thought"
    assert check("The Modern Olympic Games").detail.startswith("step 1's thought is not prose (only names)")
    off_topic = check("I look it up.", final="The passage of time brings many surprises.")
    assert off_topic.detail.startswith("step 2's thought is about neither the question nor its answer")
    assert check("I look up the Modern Olympic Games") is None
    assert check("1.4, 0.82, 1.6, 2, 3 and 7").detail.startswith("step 1's thought is not prose (mostly numbers)")
    copied = "The modern Olympic Games were first held in Athens in 1896."
    assert "a copied passage" in check("I search for the games.", final=copied).detail


def test_the_answer_must_rest_on_the_last_observation_about_the_question(types_world):
    search = Recipe().search
    found_then_lost = Trajectory(
        question="Where were the first modern Olympic Games held?",
        steps=steps(types_world, ("modern olympic games", "I look for the games."), ("mayor", "I check more.")),
    )
    problem = check_trajectory(found_then_lost, Expected.fact("Athens"), types_world, search)
    assert problem == ("unsupported", "the last search, which the answer rests on, retrieved no passage stating it")
    by_coincidence = Trajectory(  # the passage states "Athens" but is about another question
        question="Which city hosts the next winter festival?",
        steps=steps(types_world, ("athens games", "I look for the festival.")),
    )
    problem = check_trajectory(by_coincidence, Expected.fact("Athens"), types_world, search)
    assert problem.reason == "unsupported" and "is not about the question (0 of its 5 content words)" in problem.detail


def test_the_answer_passage_must_meet_the_questions_year_and_time(types_world):
    """A year the question names must be in the passage the answer rests on; a question about a
    relative time ("next", "current") needs an answer with the evidence's time boundary."""
    search = Recipe().search

    def check(question, answer="Athens", query="modern olympic games", facts=None):
        final = "The passage names the city of the games." if answer == "Athens" else "It names the mayor of Paris."
        made = Trajectory(
            question=question, steps=steps(types_world, (query, "I look it up."), answer=answer, final=final)
        )
        expected = Expected(answers=(answer,), facts=facts or (answer,))
        return check_trajectory(made, expected, types_world, search)

    assert check("Where were the first modern Olympic Games held, in 1896?") is None
    assert check("Where were the modern Olympic Games held in 1900?") == (
        "unsupported",
        "the question asks about 1900, which the passage it rests on never names",
    )
    assert check("Where will the next modern Olympic Games be held?") == (
        "unsupported",
        "the question asks about 'next', a time it does not fix, and the answer gives no time boundary ('as of ...')",
    )
    mayor = as_of("Anne Hidalgo", "2014")
    assert check("Who is the current mayor of Paris?", "Anne Hidalgo", "mayor paris").reason == "unsupported"
    assert check("Who is the current mayor of Paris?", mayor, "mayor paris", ("Anne Hidalgo", "2014")) is None


def test_the_llm_judge_is_shown_the_passage_the_answer_rests_on(types_world, scripted_roles, tmp_path):
    result = synthesize(tmp_path, "keep", llm_judge=True)
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    (shown,) = scripted_roles.judged
    assert "Les Miserables" in result["items"][0]["trajectory"]["steps"][0]["observation"]  # more was retrieved
    assert shown.startswith(
        '<information>Doc 1(Title: "Victor Hugo") Victor Hugo was a French writer born in 1802 in Besancon.'
        "</information>\n"
    )
    assert "Les Miserables" not in shown  # the scripted server's copy of the field ends with DSPy's own line


def test_a_refusal_whose_searches_retrieve_a_guess_is_rejected(types_world):
    search = Recipe().search
    refusal = Trajectory(
        question="Where were the first modern Olympic Games held?",
        steps=steps(types_world, ("modern olympic games", "I look for the games."), answer=REFUSAL),
    )
    expected = Expected(answers=(REFUSAL,), facts=(), absent=("Athens",))
    assert check_trajectory(refusal, expected, types_world, search).reason == "unsupported"
    assert (
        check_trajectory(refusal, Expected(answers=(REFUSAL,), facts=(), absent=("Rome",)), types_world, search) is None
    )


def test_a_two_hop_question_must_walk_both_hops(types_world):
    search = Recipe().search
    question = "When was the author of Les Miserables born?"
    novel, writer = (types_world.search([q], topk=1)[0][0].id for q in ("les miserables novel", "victor hugo born"))
    expected = Expected.fact("1802", bridge="Victor Hugo", hop_passages=(novel, writer))

    def check(*queries_and_thoughts, expected=expected):
        made = steps(types_world, *queries_and_thoughts, answer="1802", final="The passage says 1802.")
        return check_trajectory(Trajectory(question=question, steps=made), expected, types_world, search)

    walked = (("les miserables novel", "I look up who wrote the novel."), ("Victor Hugo birth", "Its author is named."))
    assert check(*walked) is None
    assert check(("french writer born", "I look for the writer.")) == (
        "not_multi_hop",
        "one search for a two-hop question",
    )
    assert check(("les miserables novel", "I look up the novel."), ("french writer born 1862", "I look for him.")) == (
        "not_multi_hop",
        "no later query names the bridge 'Victor Hugo'",
    )
    never = Expected.fact("1802", bridge="Victor Hugo", hop_passages=(novel, "no-such-id"))
    assert check(*walked, expected=never) == ("not_multi_hop", "hop passage 'no-such-id' was never retrieved")


def test_a_paraphrase_of_a_held_out_question_with_its_answer_is_rejected():
    held_out = HeldOutQuestions(
        [
            SeedItem(
                id="dev-7", question="Who was the author of the tragedy Hamlet?", golden_answers=["William Shakespeare"]
            )
        ]
    )
    candidate = Candidate("s1", 0, "rephrase", "Which author wrote the tragedy Hamlet?", "William Shakespeare", ())
    problem = paraphrase(held_out, candidate)
    assert problem.reason == "paraphrase" and "'dev-7'" in problem.detail
    other_answer = Candidate("s1", 0, "rephrase", "Which author wrote the tragedy Hamlet?", "Thomas Kyd", ())
    assert paraphrase(held_out, other_answer) is None and paraphrase(None, candidate) is None


def test_a_type_built_on_one_passage_takes_the_one_about_the_seed_question():
    from autodata.search.protocol import Hit
    from autodata.stages.proposal import Task

    by_chance = Hit(id="1", contents="Go (game)\nGo is played on a board; a beginner may start with 6 stones.")
    about = Hit(id="2", contents="France national football team\nFrance played 6 games at the World Cup.")
    seed = SeedItem(id="s", question="how many games did france play in the world cup", golden_answers=["6"])
    task = Task(seed, (by_chance, about), "6", "document_based", 0, "")
    assert task.stating == (by_chance, about) and task.on_topic == about
