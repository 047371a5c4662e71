"""GEPA on the challenger's instructions, scored by the inner loop, and the paired test a rewrite must
pass before it is kept, against the scripted endpoint."""

import json
import re

import pytest
from mlflow import MlflowClient

from autodata.cli import main
from autodata.errors import BudgetExceeded, EndpointError
from autodata.llm.usage import Budget
from autodata.recipe import Recipe
from autodata.search.server import free_port
from autodata.seeds import SeedItem, write_seeds
from autodata.settings import load_settings
from autodata.workspace import Workspace
from optimizers import tracking
from optimizers.prompts import INNER_LOOP_METRIC, propose_instructions, rewrite_from_rejections, seed_feedback
from tests.fakes.agents import ScriptedAgents, inputs_of

SEEDS = [
    SeedItem(id="s1", question="who wrote the tragedy hamlet", golden_answers=["William Shakespeare"]),
    SeedItem(id="s2", question="who discovered penicillin", golden_answers=["Alexander Fleming"]),
    SeedItem(id="s3", question="who painted the mona lisa", golden_answers=["Leonardo da Vinci"]),
    SeedItem(id="s4", question="which novel has the whaling captain ahab", golden_answers=["Moby-Dick"]),
    SeedItem(id="s5", question="what is the highest mountain above sea level", golden_answers=["Mount Everest"]),
    SeedItem(id="s6", question="which planet is the largest in the solar system", golden_answers=["Jupiter"]),
    SeedItem(id="s7", question="who created the python programming language", golden_answers=["Guido van Rossum"]),
    SeedItem(id="s8", question="when did the rms titanic sink", golden_answers=["1912"]),
]
RULE = "Never put the answer in the question"  # what the scripted optimizer role adds


class RuleHelpsSomeSeeds(ScriptedAgents):
    """A challenger that heeds RULE only when writing from a seed whose question is in `helped`."""

    helped: tuple[str, ...] = ()

    def __call__(self, request: dict) -> str:
        seed = inputs_of(request).get("seed_question")
        if seed is not None and seed not in self.helped:  # a challenger request the rule does not help
            system, *rest = request["messages"]
            request = {**request, "messages": [{**system, "content": system["content"].replace(RULE, "")}, *rest]}
        return super().__call__(request)


@pytest.fixture
def rule_helps(scripted_roles):
    """The scripted roles, whose challenger heeds RULE only on the seeds the test names in `.helped`."""
    scripted_roles.__class__ = RuleHelpsSomeSeeds  # same fields; the server keeps calling this object
    scripted_roles.challenger_rule = RULE
    return scripted_roles


def optimize_challenger(tmp_path, capsys) -> tuple[list[str], str]:
    """`autodata prompts optimize challenger` on SEEDS (2 train, 3 val, 3 holdout): its arguments and output."""
    seeds = tmp_path / "seeds.jsonl"
    write_seeds(seeds, SEEDS)
    args = [
        "prompts",
        "optimize",
        "challenger",
        "--seeds",
        str(seeds),
        "--budget",
        "12",
        "--train",
        "2",
        "--val",
        "3",
        "--holdout",
        "3",
    ]
    assert main(args) == 0
    return args, capsys.readouterr().out


def test_gepa_registers_instructions_that_fix_the_leak(scripted_roles, tmp_path, capsys):
    scripted_roles.challenger_rule = RULE
    args, out = optimize_challenger(tmp_path, capsys)
    assert "validation score 0.000 (version 1) -> best 1.000" in out, out
    assert "Paired test on 3 holdout seeds after GEPA's train and val seeds: 0.000 -> 1.000, difference +1.000" in out
    assert "Registered prompts:/autodata.challenger/2" in out
    assert scripted_roles.calls["rewrite"] >= 1 and scripted_roles.calls["weak"] >= 3

    version = MlflowClient().get_prompt_version("autodata.challenger", 2)
    assert RULE in version.template
    message = version.commit_message
    assert message.startswith(
        "GEPA: warn against leaking the answer (paired test on 3 holdout seeds after GEPA's "
        "train and val seeds: version 1 0.00 -> this 1.00: accepted"
    )
    assert "chosen on GEPA's val score 0.00 -> 1.00 on 3 cases" in message
    tags = version.tags
    assert (tags["autodata.status"], tags["autodata.n"], tags["autodata.metric"]) == (
        "accepted",
        "3",
        INNER_LOOP_METRIC,
    )
    assert (tags["autodata.parent_val_score"], tags["autodata.val_score"]) == ("0.0000", "1.0000")
    assert float(tags["autodata.difference_low"]) > 0

    # The leak is fixed for good: a second run starts from version 2, already perfect, and registers nothing.
    assert main(args) == 0
    assert "No candidate beat the current instructions" in capsys.readouterr().out
    assert tracking.latest_prompt_version("challenger") == 2

    assert main([*args[:-1], "20"]) == 1  # 2 + 3 + 20 seeds with evidence needed, 8 given
    assert "needs 25 (train 2 + val 3 + holdout 20)" in capsys.readouterr().err


def test_gepas_best_is_not_accepted_unless_it_beats_the_start_on_the_holdout(rule_helps, tmp_path, capsys):
    """The rule helps on the seeds GEPA trains and validates on, not on the holdout: GEPA's best looks perfect
    on its own validation cases, but the paired test on the holdout finds no difference."""
    rule_helps.helped = tuple(s.question for s in SEEDS[:5])
    _, out = optimize_challenger(tmp_path, capsys)
    assert "validation score 0.000 (version 1) -> best 1.000" in out, out
    assert "Paired test on 3 holdout seeds after GEPA's train and val seeds: 0.000 -> 0.000" in out
    assert "registered as rejected (never selected): prompts:/autodata.challenger/2" in out
    assert tracking.latest_prompt_version("challenger") == 1

    version = MlflowClient().get_prompt_version("autodata.challenger", 2)
    assert version.tags["autodata.status"] == "rejected" and version.tags["autodata.difference_high"] == "0.0000"
    assert "version 1 0.00 -> this 0.00: rejected, not better" in version.commit_message
    experiment_id = tracking.setup(load_settings())
    (run,) = MlflowClient().search_runs([experiment_id], "tags.`autodata.kind` = 'prompt-optimization'")
    assert run.data.metrics["best_val_score"] == 1.0 and run.data.metrics["holdout_best_score"] == 0.0
    assert run.data.tags["autodata.prompt_status"] == "rejected"


def test_solver_prompts_are_not_optimizable(capsys):
    with pytest.raises(SystemExit):
        main(["prompts", "optimize", "weak"])
    assert "invalid choice" in capsys.readouterr().err


def test_seed_feedback_scores_and_explains():
    assert seed_feedback([], True)[0] == 1.0
    rows = [{"question": "Is X the answer?", "reason": "leak", "detail": "the answer appears in the question"}]
    score, text = seed_feedback(rows, False)
    assert score == 0.0 and "rejected as leak" in text and "remove the answer from the question" in text
    rows.append({"question": "Who?", "reason": "too_easy", "detail": "weak 1.0"})
    assert seed_feedback(rows, False)[0] == 0.3


def test_gepa_tunes_the_verifiers_judge_on_labelled_cases(scripted_roles, tmp_path, capsys):
    seeds, keep = tmp_path / "seeds.jsonl", tmp_path / "keep.yaml"
    write_seeds(seeds, SEEDS)
    keep.write_text("strategies:\n  keep: 1\n  rephrase: 0\n  multi_hop: 0\n")
    assert main(["synthesize", "--recipe", str(keep), "--seeds", str(seeds), "--out", str(tmp_path / "run")]) == 0
    rule = "Reject an answer the evidence does not state"
    scripted_roles.judge_rule, scripted_roles.rewrite_adds = rule, f" {rule}."
    capsys.readouterr()

    args = [
        "prompts",
        "optimize",
        "verifier",
        "--data",
        str(tmp_path / "run"),
        "--budget",
        "16",
        "--train",
        "2",
        "--val",
        "4",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    # Half the validation cases carry another item's answer: accepting everything scores 0.5.
    assert "validation score 0.500 (version 1) -> best 1.000" in out, out
    # The 6 holdout cases, likewise: the start is wrong on the 3 that must be rejected, the best on none.
    assert "Paired test on 6 holdout labelled cases after GEPA's train and val cases: 0.500 -> 1.000" in out, out
    version = MlflowClient().get_prompt_version("autodata.verifier", 2)
    assert rule in version.template and version.tags["autodata.status"] == "accepted"
    assert float(version.tags["autodata.difference_low"]) > 0 and version.tags["autodata.n"] == "6"

    assert main(["prompts", "optimize", "verifier", "--data", str(tmp_path / "nowhere")]) == 1
    assert "pass --data with a synthesis folder" in capsys.readouterr().err


def rewrite_on(val_seeds: list[SeedItem], run_dir, *, trial_seeds=("t1", "t2")) -> int | None:
    """`rewrite_from_rejections` after a trial on `trial_seeds` whose challenger leaked the answer."""
    run_dir.mkdir()
    leak = {
        "seed_id": "t1",
        "reason": "leak",
        "detail": "the answer appears in the question",
        "question": "Is William Shakespeare the answer?",
    }
    (run_dir / "rejected.jsonl").write_text(json.dumps(leak) + "\n")
    (run_dir / "progress.jsonl").write_text("".join(json.dumps({"seed_id": s}) + "\n" for s in trial_seeds))
    settings = load_settings()
    tracking.setup(settings)
    tracking.ensure_seed_prompts()
    with Workspace(settings) as workspace:
        return rewrite_from_rejections(
            workspace.llms,
            Recipe(),
            run_dir,
            0,
            0.0,
            retriever=workspace.retriever,
            val_seeds=val_seeds,
            parent_version=1,
        )


def test_a_rewrite_better_on_only_some_seeds_is_registered_as_rejected(rule_helps, tmp_path):
    """Better on 2 of 4 validation seeds: mean +0.5, but the interval reaches 0 (the old `after > before` kept it)."""
    rule_helps.helped = (SEEDS[0].question, SEEDS[1].question)
    assert rewrite_on(SEEDS[:4], tmp_path / "run") is None
    assert tracking.latest_prompt_version("challenger") == 1
    tags = MlflowClient().get_prompt_version("autodata.challenger", 2).tags
    assert tags["autodata.status"] == "rejected" and tags["autodata.metric"] == INNER_LOOP_METRIC
    assert (tags["autodata.n"], tags["autodata.split"]) == ("4", "train seeds after the trial's")
    assert (tags["autodata.parent_val_score"], tags["autodata.val_score"], tags["autodata.difference"]) == (
        "0.0000",
        "0.5000",
        "0.5000",
    )
    assert float(tags["autodata.difference_low"]) <= 0 < float(tags["autodata.difference_high"])


def test_a_rewrite_clearly_better_on_the_validation_seeds_is_accepted(rule_helps, tmp_path):
    rule_helps.helped = tuple(s.question for s in SEEDS)
    assert rewrite_on(SEEDS[:4], tmp_path / "run", trial_seeds=("s1", "t2")) == 2
    version = MlflowClient().get_prompt_version("autodata.challenger", 2)
    assert version.tags["autodata.status"] == "accepted" and float(version.tags["autodata.difference_low"]) > 0
    split = "train seeds, 1 of them the trial's own (the split has too few beyond them)"
    assert version.tags["autodata.split"] == split
    # a seed drawn as multi-hop, which the scripted solver answers in one search, fails either way (not_multi_hop)
    found = re.search(
        rf"validation on 4 {re.escape(split)}: version 1 0\.00 -> this (0\.75|1\.00): accepted \(difference "
        r"\+(0\.75|1\.00), 95% interval \[(0\.25|1\.00), 1\.00\], above 0\)",
        version.commit_message,
    )
    assert found, version.commit_message
    assert tracking.latest_prompt_version("challenger") == 2


@pytest.mark.parametrize("fault", ["dead endpoint", "budget spent"])
def test_an_optimizer_that_cannot_answer_raises_instead_of_proposing_nothing(scripted_roles, monkeypatch, fault):
    budget = Budget()
    if fault == "dead endpoint":
        monkeypatch.setenv("AUTODATA_ROLES__OPTIMIZER__BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    else:
        budget = Budget(max_calls=0)
    with Workspace(load_settings(), budget=budget) as workspace:
        with pytest.raises(EndpointError if fault == "dead endpoint" else BudgetExceeded):
            propose_instructions(workspace.llms, "challenger", "Write one question.", "No rejections.", rollout_id="x")
    assert scripted_roles.calls.get("rewrite", 0) == 0


def test_gepa_stops_when_the_optimizer_endpoint_is_dead(scripted_roles, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AUTODATA_ROLES__OPTIMIZER__BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    seeds = tmp_path / "seeds.jsonl"
    write_seeds(seeds, SEEDS)
    args = [
        "prompts",
        "optimize",
        "challenger",
        "--seeds",
        str(seeds),
        "--budget",
        "12",
        "--train",
        "2",
        "--val",
        "3",
        "--holdout",
        "3",
    ]
    assert main(args) == 1
    assert "'optimizer'" in capsys.readouterr().err
    assert tracking.latest_prompt_version("challenger") == 1
