"""GEPA on the challenger's instructions, scored by the inner loop, against the scripted endpoint."""

import pytest
from mlflow import MlflowClient

from autodata.cli import main
from autodata.seeds import SeedItem, write_seeds
from optimizers import tracking
from optimizers.prompts import seed_feedback

SEEDS = [
    SeedItem(id="s1", question="who wrote the tragedy hamlet", golden_answers=["William Shakespeare"]),
    SeedItem(id="s2", question="who discovered penicillin", golden_answers=["Alexander Fleming"]),
    SeedItem(id="s3", question="who painted the mona lisa", golden_answers=["Leonardo da Vinci"]),
    SeedItem(id="s4", question="which novel has the whaling captain ahab", golden_answers=["Moby-Dick"]),
    SeedItem(id="s5", question="what is the highest mountain above sea level", golden_answers=["Mount Everest"]),
]
RULE = "Never put the answer in the question"  # what the scripted optimizer role adds


def test_gepa_registers_instructions_that_fix_the_leak(scripted_roles, tmp_path, capsys):
    scripted_roles.challenger_rule = RULE
    seeds = tmp_path / "seeds.jsonl"
    write_seeds(seeds, SEEDS)
    args = ["prompts", "optimize", "challenger", "--seeds", str(seeds), "--budget", "12", "--train", "2", "--val", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation score 0.000 (version 1) -> best 1.000" in out, out
    assert "Registered prompts:/autodata.challenger/2" in out
    assert scripted_roles.calls["rewrite"] >= 1 and scripted_roles.calls["weak"] >= 3

    version = MlflowClient().get_prompt_version("autodata.challenger", 2)
    assert RULE in version.template
    assert version.commit_message.startswith("GEPA: warn against leaking the answer (val score 0.00 -> 1.00")

    # The leak is fixed for good: a second run starts from version 2, already perfect, and registers nothing.
    assert main(args) == 0
    assert "No candidate beat the current instructions" in capsys.readouterr().out
    assert tracking.latest_prompt_version("challenger") == 2


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

    args = ["prompts", "optimize", "verifier", "--data", str(tmp_path / "run"), "--budget", "16", "--train", "2",
            "--val", "4"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    # Half the validation cases carry another item's answer: accepting everything scores 0.5.
    assert "validation score 0.500 (version 1) -> best 1.000" in out, out
    assert rule in MlflowClient().get_prompt_version("autodata.verifier", 2).template

    assert main(["prompts", "optimize", "verifier", "--data", str(tmp_path / "nowhere")]) == 1
    assert "pass --data with a synthesis folder" in capsys.readouterr().err
