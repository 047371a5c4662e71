"""A kept trajectory reads like a solver that did not know the answer (scripted endpoint, real index).

Each case turns one knob of the scripted roles and checks the seed is rejected for the
right reason, counted in the manifest; the honest default is accepted.
"""

import json

import pytest

from autodata.recipe import Recipe
from autodata.roles.verifier import Expected, check_trajectory
from autodata.search import BM25Index, format_hits
from autodata.settings import load_settings
from autodata.trajectory import AnswerStep, SearchStep, Trajectory
from autodata.workspace import Workspace
from tests.conftest import write_corpus

SEED = [{"id": "s1", "question": "who wrote the tragedy hamlet", "golden_answers": ["William Shakespeare"]}]
KEEP = {"strategies": {"keep": 1, "rephrase": 0, "multi_hop": 0}, "max_rounds": 1}


def synthesize(tmp_path, recipe_changes=KEEP, seeds=SEED) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    out = tmp_path / "out"
    with Workspace(load_settings()) as ws:
        report = ws.synthesize(
            out, recipe=Recipe().with_changes(**recipe_changes), seeds=seeds_file, show_progress=False
        )
    rejected = (
        [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
        if (out / "rejected.jsonl").exists()
        else []
    )
    return {"manifest": report.manifest, "rejected": rejected}


def test_the_honest_default_is_accepted(scripted_roles, tmp_path):
    assert synthesize(tmp_path)["manifest"]["items"]["accepted"] == 1


@pytest.mark.parametrize(
    "think, reason, detail",
    [
        ("Probably William Shakespeare, so I check it.", "hint_leak", "step 1's thought holds the answer"),
        ("I was told who it is, so I search the play.", "hint_leak", "speaks of being told"),
        ("The hint names an article; I search it.", "hint_leak", "speaks of being told"),
        (" . ", "bad_thought", "step 1's thought is empty or too short"),
        ("I search", "bad_thought", "step 1's thought is empty or too short"),
        ("Search 1; Search 2; Search 3; Search 4", "bad_thought", "not prose (mostly numbers)"),
        ("Search search search search for it", "bad_thought", "repeats itself"),
        ("I can answer now without looking further.", "bad_thought", "says it answers now, then it searches"),
    ],
)
def test_a_trajectory_that_knew_or_babbled_is_rejected(scripted_roles, tmp_path, think, reason, detail):
    scripted_roles.strong_think = think
    result = synthesize(tmp_path)
    assert result["manifest"]["items"]["accepted"] == 0
    assert result["manifest"]["rejections"] == {reason: 1}
    assert detail in result["rejected"][0]["detail"]


def test_a_query_holding_the_answer_is_a_hint_leak(scripted_roles, tmp_path):
    scripted_roles.strong_query = "William Shakespeare tragedy"
    result = synthesize(tmp_path)
    assert result["manifest"]["rejections"] == {"hint_leak": 1}
    assert "step 1's query holds the answer" in result["rejected"][0]["detail"]


REPHRASE = {"strategies": {"keep": 0, "rephrase": 1, "multi_hop": 0}, "max_rounds": 1}


@pytest.mark.parametrize("strategy, leaks", [(REPHRASE, True), (KEEP, False)])
def test_a_query_naming_a_hinted_title_the_question_does_not_is_a_hint_leak(scripted_roles, tmp_path, strategy, leaks):
    """The hint names the answer's article, 'Hamlet'. The rephrased question never does, so searching it
    first betrays the hint; the kept seed question ('who wrote the tragedy hamlet') names it itself."""
    scripted_roles.strong_query = "Hamlet tragedy"
    result = synthesize(tmp_path, strategy)
    if leaks:
        assert result["manifest"]["rejections"] == {"hint_leak": 1}
        assert "step 1's query holds the hinted article title 'Hamlet'" in result["rejected"][0]["detail"]
    else:
        assert result["manifest"]["items"]["accepted"] == 1


@pytest.fixture
def bridge_world(tmp_path, monkeypatch, scripted_roles):
    """A corpus where another article mentions Hamlet, so 'Hamlet' can be a hidden bridge entity."""
    facts = [
        ("Hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600, set in Denmark."),
        ("Kronborg", "Kronborg is a castle in Helsingor, Denmark, famous as the setting of Hamlet."),
        ("Paris", "Paris is the capital and largest city of France."),
    ]
    index = BM25Index.build(
        write_corpus(tmp_path / "bridge.jsonl", facts), tmp_path / "bridge-index", show_progress=False
    )
    monkeypatch.setenv("AUTODATA_RETRIEVER__INDEX_DIR", str(index.folder))
    return index


MULTI_HOP = {"strategies": {"keep": 0, "rephrase": 0, "multi_hop": 1}, "max_rounds": 1}


def test_a_multi_hop_query_naming_the_hidden_bridge_is_a_hint_leak(bridge_world, scripted_roles, tmp_path):
    scripted_roles.strong_query = "Hamlet"  # the bridge, searched by name before any observation showed it
    result = synthesize(tmp_path, MULTI_HOP)
    assert result["manifest"]["rejections"] == {"hint_leak": 1}
    assert "holds the bridge entity 'Hamlet'" in result["rejected"][0]["detail"]


def test_a_multi_hop_hint_does_not_name_the_bridge(bridge_world):
    from autodata.pipeline import Candidate, SeedProcessor
    from autodata.search.protocol import Hit

    hamlet = Hit(id="0", contents='"Hamlet"\nHamlet is a tragedy written by William Shakespeare.')
    kronborg = Hit(id="1", contents='"Kronborg"\nKronborg is the setting of Hamlet.')
    candidate = Candidate(
        "s1",
        0,
        "multi_hop",
        "Which playwright wrote the play set at a Danish castle?",
        "William Shakespeare",
        (kronborg, hamlet),
        bridge="Hamlet",
    )
    for mode in ("answer", "titles"):
        processor = SeedProcessor(Recipe().with_changes(hint_mode=mode), bridge_world, llms=None)
        hint = processor.hint(candidate)
        assert "Kronborg" in hint and "Hamlet" not in hint, hint


def test_questions_with_strong_or_weak_inside_words_are_not_solver_directed(scripted_roles, tmp_path):
    scripted_roles.challenger_question = "Which playwright, the strongest of his era, wrote the tragedy set in Denmark?"
    result = synthesize(tmp_path, {"strategies": {"keep": 0, "rephrase": 1, "multi_hop": 0}, "max_rounds": 1})
    assert "invalid" not in result["manifest"]["rejections"] and result["manifest"]["items"]["accepted"] == 1
    scripted_roles.challenger_question = "Which playwright should the weak solver name for the Danish tragedy?"
    again = [{**SEED[0], "id": "s2"}]  # another seed: the first one's challenger reply is in the LLM cache
    result = synthesize(
        tmp_path / "again", {"strategies": {"keep": 0, "rephrase": 1, "multi_hop": 0}, "max_rounds": 1}, seeds=again
    )
    assert result["rejected"][0]["detail"] == "the question addresses the solvers"


def test_thought_rules_on_hand_made_trajectories(bm25_index):
    search = Recipe().search
    observation = format_hits(bm25_index.search(["hamlet tragedy"], topk=search.top_k)[0])

    def trajectory(*thoughts):
        first, final = thoughts
        return Trajectory(
            question="Who wrote the tragedy Hamlet?",
            steps=[
                SearchStep(think=first, query="hamlet tragedy", observation=observation, hit_ids=[]),
                AnswerStep(think=final, answer="William Shakespeare"),
            ],
        )

    assert (
        check_trajectory(
            trajectory("I look for the play first.", "The passage names William Shakespeare."),
            Expected.fact("William Shakespeare"),
            bm25_index,
            search,
        )
        is None
    )  # the answer after it was observed
    same = check_trajectory(
        trajectory("I look for the play first.", "I look for the play first."),
        Expected.fact("William Shakespeare"),
        bm25_index,
        search,
    )
    assert same.reason == "bad_thought" and "repeats itself" in same.detail
    late = check_trajectory(
        trajectory("I look for the play first.", "Let me search once more, then: done."),
        Expected.fact("William Shakespeare"),
        bm25_index,
        search,
    )
    assert late == ("bad_thought", "step 2's thought says it must search, then it answers")
    armstrong = check_trajectory(
        trajectory("Armstrong is not it; I look for the play.", "The passage says who wrote the play."),
        Expected.fact("William Shakespeare"),
        bm25_index,
        search,
    )
    assert armstrong is None


def test_tags_describe_the_accepted_question_and_multi_hop_is_not_a_simple_fact(bridge_world, scripted_roles, tmp_path):
    # an honest search: it finds Kronborg, which names the bridge, then the bridge's article states the answer
    scripted_roles.strong_queries = ("Danish castle", "Hamlet")
    scripted_roles.challenger_question = "Which playwright wrote the tragedy set at a Danish castle?"
    result = synthesize(tmp_path, MULTI_HOP)
    manifest = result["manifest"]
    assert manifest["items"]["accepted"] == 1, (manifest["rejections"], result["rejected"])
    assert scripted_roles.tagged == ["Which playwright wrote the tragedy set at a Danish castle?"]  # the tagger said
    assert manifest["by_task_type"] == {"multi_hop_composition": 1} and manifest["by_hops"] == {"2": 1}  # simple_fact
    keep = synthesize(tmp_path / "keep")
    assert scripted_roles.tagged[-1] == "Who wrote the tragedy hamlet?"  # the kept question, as asked
    assert keep["manifest"]["by_task_type"] == {"simple_fact": 1}


def test_headline_numbers_count_per_seed_tried_and_per_seed_with_evidence(scripted_roles, tmp_path, capsys):
    from autodata.cli import main

    seeds = SEED + [
        {"id": "s2", "question": "what is the airspeed of an unladen swallow", "golden_answers": ["11 m/s"]},
        {"id": "s3", "question": "who discovered penicillin", "golden_answers": ["Alexander Fleming"]},
    ]
    seeds_file = tmp_path / "three.jsonl"
    seeds_file.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    recipe = tmp_path / "keep.yaml"
    recipe.write_text("strategies:\n  keep: 1\n  rephrase: 0\n  multi_hop: 0\nmax_rounds: 1\n")
    assert main(["synthesize", "--seeds", str(seeds_file), "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "Accepted 2 items from 3 seeds: 0.67 per seed tried, 1.00 per seed with evidence (2)" in out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["accepted_per_seed"] == 0.6667 and manifest["accepted_per_seed_with_evidence"] == 1.0


def test_a_hinted_thought_is_rewritten_without_the_hint(scripted_roles, tmp_path):
    """The agent that saw the hint chose the query; the thought kept in the data was written by a call
    that saw only the question, the earlier observations and the query."""
    scripted_roles.hinted_think = "The hint says William Shakespeare, so I confirm it."
    result = synthesize(tmp_path)
    assert result["manifest"]["items"]["accepted"] == 1
    item = json.loads((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()[0])
    assert item["trajectory"]["steps"][0]["think"] == scripted_roles.strong_think
    assert "William Shakespeare" in item["strong"]["hint"]  # the hint is kept as metadata, not as training text
    sft = (tmp_path / "out" / "sft_dataset.json").read_text()
    assert "hint" not in sft.lower() and "The hint says" not in sft


def test_a_hinted_query_naming_the_answer_is_asked_for_again(scripted_roles, tmp_path):
    """The hinted solver's first query names the answer before any search showed it: that query is
    asked for again (another rollout id), and the trajectory kept searches without it."""
    scripted_roles.first_queries = ("William Shakespeare tragedy",)
    result = synthesize(tmp_path, {**KEEP, "acceptance": {"attempts_per_solver": 1}})  # one strong attempt
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = json.loads((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()[0])
    assert item["trajectory"]["steps"][0]["query"] == "Who wrote the tragedy hamlet"
    assert scripted_roles.calls["strong_first"] == 2


def test_a_hinted_query_that_keeps_naming_the_answer_is_rejected_as_a_leak(scripted_roles, tmp_path):
    scripted_roles.first_queries = ("William Shakespeare tragedy",) * 3
    result = synthesize(tmp_path, {**KEEP, "acceptance": {"attempts_per_solver": 1}})
    assert result["manifest"]["rejections"] == {"hint_leak": 1}
    assert scripted_roles.calls["strong_first"] == 3


def test_a_kept_thought_the_rules_reject_is_written_again(scripted_roles, tmp_path):
    """The hinted solver's search thought comes from a call without the hint; one that states what
    nothing showed is asked for again (another rollout id), and the grounded retry is kept."""
    scripted_roles.explain_thoughts = ("I recall it was first staged in 1599.",)
    result = synthesize(tmp_path, {**KEEP, "acceptance": {"attempts_per_solver": 1}})  # one strong attempt
    assert result["manifest"]["items"]["accepted"] == 1, result["rejected"]
    item = json.loads((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()[0])
    assert item["trajectory"]["steps"][0]["think"] == scripted_roles.strong_think
    assert scripted_roles.calls["strong_explain"] == 2
