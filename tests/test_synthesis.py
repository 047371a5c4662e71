"""The inner loop against a scripted OpenAI-compatible endpoint and a real BM25 index."""

import json
from collections import Counter

import pytest

from autodata.errors import BudgetExceeded, DamagedFileError, RecipeError, SearchUnavailable, SeedDataError
from autodata.llm import Budget, LLMSession
from autodata.pipeline import decided
from autodata.recipe import Recipe
from autodata.roles import Expected, check_trajectory
from autodata.search import SearchClient
from autodata.search.server import free_port
from autodata.settings import load_settings
from autodata.synthesis import synthesize
from autodata.trajectory import SearchStep, Trajectory, inference_prompt, sharegpt_problems
from tests.conftest import point_roles_at
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI

SEEDS = [
    {"id": "s1", "question": "who wrote the tragedy hamlet", "golden_answers": ["William Shakespeare"]},
    {"id": "s2", "question": "who discovered penicillin", "golden_answers": ["Alexander Fleming"]},
    {"id": "s3", "question": "what is the airspeed of an unladen swallow", "golden_answers": ["11 m/s"]},
    {"id": "s4", "question": "which planet is the largest in the solar system", "golden_answers": ["Jupiter"]},
    {"id": "s5", "question": "who painted the mona lisa", "golden_answers": ["Leonardo da Vinci"]},
    {"id": "s6", "question": "when did the rms titanic sink", "golden_answers": ["1912"]},
]
KEEP_ONLY = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0}, max_rounds=2)


@pytest.fixture
def seeds_file(tmp_path):
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(SEEDS))
    return path


def run(fake, monkeypatch, seeds_file, out, bm25_index, recipe=KEEP_ONLY, budget=Budget(), **kwargs):
    point_roles_at(monkeypatch, fake.url)
    with LLMSession(load_settings(), budget=budget, cache=kwargs.pop("cache", True)) as llms:
        return synthesize(
            seeds_file, out, recipe=recipe, retriever=bm25_index, llms=llms, show_progress=False, **kwargs
        )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_accepted_items_are_grounded_verified_and_exported(tmp_path, monkeypatch, seeds_file, bm25_index):
    agents = ScriptedAgents()
    with ScriptedOpenAI(reply=agents) as fake:
        report = run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index)
    out = tmp_path / "out"
    accepted = read_jsonl(out / "trajectories.jsonl")
    rejected = read_jsonl(out / "rejected.jsonl")
    assert {i["seed_id"] for i in accepted} == {"s1", "s2", "s4", "s5", "s6"}
    assert [r["reason"] for r in rejected] == ["no_evidence"]  # s3: nothing in the corpus
    golden = {s["id"]: s["golden_answers"] for s in SEEDS}
    for item in accepted:
        trajectory = Trajectory.model_validate(item["trajectory"])
        # every <information> block is exactly what our retriever returns for the query
        assert check_trajectory(trajectory, Expected.fact(item["answer"]), bm25_index, KEEP_ONLY.search) is None
        assert item["answer"] in golden[item["seed_id"]] and trajectory.answer == item["answer"]
        assert item["weak"]["scores"] == [0.0, 0.0] and item["strong"]["scores"] == [1.0, 1.0]  # early stopping
        assert "The answer is" not in json.dumps(item["trajectory"])  # the hint never enters the trajectory
        assert item["tags"]["task_type"] == "simple_fact" and item["recipe_hash"] == KEEP_ONLY.content_hash

    sft = json.loads((out / "sft_dataset.json").read_text())
    assert len(sft) == len(accepted) and all(sharegpt_problems(example) == [] for example in sft)
    first = sft[0]["conversations"]
    assert first[0] == {"from": "human", "value": inference_prompt(accepted[0]["question"])}
    assert first[1]["value"].startswith("<think>") and first[1]["value"].endswith("</search>")
    assert first[2]["value"].startswith("<information>Doc 1(Title: ")
    assert first[-1]["value"].endswith("</answer>")
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["search_sft"]["formatting"] == "sharegpt" and info["search_sft"]["file_name"] == "sft_dataset.json"
    assert len(read_jsonl(out / "midtrain.jsonl")) == len(sft)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == report.manifest
    assert manifest["items"] == {"accepted": 5, "in_datasets": 5, "rejected_candidates": 1}
    assert manifest["rejections"] == dict(Counter(r["reason"] for r in rejected))
    assert manifest["by_strategy"] == {"keep": 5} and manifest["by_hops"] == {"1": 5}
    assert manifest["quality_gates"]["sharegpt_rule_violations"] == 0 and manifest["quality_gates"]["all_with_search"]
    per_item = manifest["llm_per_accepted_item"]
    assert per_item["weak"]["calls"] == 2 and per_item["judge"]["calls"] == 1  # the tagger
    assert sum(c["calls"] for c in manifest["llm_totals"].values()) == len(fake.requests)


def test_a_killed_run_resumes_to_the_same_accepted_set(tmp_path, monkeypatch, seeds_file, bm25_index):
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        run(fake, monkeypatch, seeds_file, tmp_path / "straight", bm25_index)
        with pytest.raises(BudgetExceeded):  # dies in the middle of a seed
            run(
                fake,
                monkeypatch,
                seeds_file,
                tmp_path / "resumed",
                bm25_index,
                budget=Budget(max_calls=12),
                cache=False,
            )
        partial = read_jsonl(tmp_path / "resumed" / "progress.jsonl")
        assert 0 < len(partial) < len(SEEDS)
        with open(tmp_path / "resumed" / "trajectories.jsonl", "a") as f:
            f.write('{"seed_id": "s6", "torn')  # a crash in the middle of a write
        report = run(fake, monkeypatch, seeds_file, tmp_path / "resumed", bm25_index)
        assert report.seeds_run_now == len(SEEDS) - len(partial)
    straight = read_jsonl(tmp_path / "straight" / "trajectories.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "trajectories.jsonl")
    key = lambda item: item["id"]
    assert sorted(resumed, key=key) == sorted(straight, key=key)
    assert len(read_jsonl(tmp_path / "resumed" / "progress.jsonl")) == len(SEEDS)


def test_a_damaged_middle_line_stops_the_resume_and_changes_nothing(tmp_path, monkeypatch, seeds_file, bm25_index):
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        with pytest.raises(BudgetExceeded):
            run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index, budget=Budget(max_calls=40), cache=False)
        progress = tmp_path / "out" / "progress.jsonl"
        lines = progress.read_text().splitlines(keepends=True)
        assert len(lines) >= 2
        progress.write_text("".join([lines[0], '{"seed_id": "s2", "acc\n', *lines[1:]]))  # a disk error, mid-file
        before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
        sent = len(fake.requests)
        with pytest.raises(DamagedFileError, match=r"progress.jsonl, line 2: not a JSON record .* Nothing was changed"):
            run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index)
        assert len(fake.requests) == sent
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_target_accepted_stops_at_n_and_a_larger_target_continues(tmp_path, monkeypatch, seeds_file, bm25_index):
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        first = run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index, target_accepted=2).manifest
        assert first["items"]["accepted"] == 2 and first["seeds"]["done"] < len(SEEDS)
        assert first["target"] == {"accepted": 2, "met": True, "seeds_used": first["seeds"]["done"]}
        more = run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index, target_accepted=3)
        assert more.manifest["items"]["accepted"] == 3 and more.seeds_run_now >= 1
        assert more.manifest["seeds"]["done"] == first["seeds"]["done"] + more.seeds_run_now
        unmet = run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index, target_accepted=100).manifest
    assert unmet["target"] == {"accepted": 100, "met": False, "seeds_used": len(SEEDS)}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["target"] == unmet["target"]


def test_rerunning_a_finished_run_does_nothing_and_another_recipe_is_refused(
    tmp_path, monkeypatch, seeds_file, bm25_index
):
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index)
        sent = len(fake.requests)
        report = run(fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index)
        assert report.seeds_run_now == 0 and len(fake.requests) == sent
        with pytest.raises(RecipeError, match="holds a run with another recipe"):
            run(
                fake, monkeypatch, seeds_file, tmp_path / "out", bm25_index, recipe=KEEP_ONLY.with_changes(max_rounds=3)
            )


def test_too_easy_and_too_hard_are_rejected_with_feedback(tmp_path, monkeypatch, seeds_file, bm25_index):
    agents = ScriptedAgents(weak_answer="William Shakespeare")  # the weak solver knows s1
    with ScriptedOpenAI(reply=agents) as fake:
        run(
            fake,
            monkeypatch,
            seeds_file,
            tmp_path / "easy",
            bm25_index,
            limit=1,
            recipe=KEEP_ONLY.with_changes(strategies={"keep": 1, "rephrase": 1, "multi_hop": 0}),
        )
    rejected = read_jsonl(tmp_path / "easy" / "rejected.jsonl")
    assert rejected[0]["reason"] == "too_easy" and rejected[0]["strategy"] in ("keep", "rephrase")
    assert agents.calls.get("strong_first", 0) == 0  # decided by the weak solver alone

    hard = ScriptedAgents(strong_query="Olympic Games chess Jupiter planet")  # three wrong passages
    with ScriptedOpenAI(reply=hard) as fake:
        run(fake, monkeypatch, seeds_file, tmp_path / "hard", bm25_index, limit=1, cache=False)
    reasons = [r["reason"] for r in read_jsonl(tmp_path / "hard" / "rejected.jsonl")]
    assert reasons == ["too_hard"]  # keep is tried once; no other strategy has weight
    assert read_jsonl(tmp_path / "hard" / "trajectories.jsonl") == []


def test_rephrase_candidates_pass_quality_checks_or_say_why(tmp_path, monkeypatch, seeds_file, bm25_index):
    recipe = Recipe().with_changes(strategies={"keep": 0, "rephrase": 1, "multi_hop": 0}, max_rounds=1)
    leak = ScriptedAgents(challenger_question="Did William Shakespeare write Hamlet?")
    with ScriptedOpenAI(reply=leak) as fake:
        run(fake, monkeypatch, seeds_file, tmp_path / "leak", bm25_index, limit=1, recipe=recipe)
    assert read_jsonl(tmp_path / "leak" / "rejected.jsonl")[0]["reason"] == "leak"

    good = ScriptedAgents(challenger_question="Which playwright wrote the tragedy hamlet set in Denmark?")
    with ScriptedOpenAI(reply=good) as fake:
        run(fake, monkeypatch, seeds_file, tmp_path / "good", bm25_index, limit=1, recipe=recipe, cache=False)
    item = read_jsonl(tmp_path / "good" / "trajectories.jsonl")[0]
    assert item["strategy"] == "rephrase" and item["question"] == good.challenger_question
    assert item["answer"] == "William Shakespeare"


def test_early_stopping_saves_solver_calls(tmp_path, monkeypatch, seeds_file, bm25_index):
    counts = {}
    for early in (True, False):
        agents = ScriptedAgents()
        recipe = KEEP_ONLY.with_changes(acceptance={"attempts_per_solver": 5, "early_stop": early})
        with ScriptedOpenAI(reply=agents) as fake:
            run(fake, monkeypatch, seeds_file, tmp_path / f"early-{early}", bm25_index, recipe=recipe, cache=False)
        counts[early] = agents.calls["weak"] + agents.calls["strong_first"]
    assert counts[True] <= 0.7 * counts[False]


def test_decided_settles_as_soon_as_the_rest_cannot_matter():
    assert decided([0.0, 0.0], 3, 0.5)  # at most 1/3 < 0.5
    assert not decided([0.0], 3, 0.5)
    assert decided([1.0, 1.0], 3, 0.65)  # already 2/3 >= 0.65
    assert not decided([1.0, 0.0], 3, 0.65)
    assert decided([0.0, 0.0], 3, 0.65)  # at most 1/3 < 0.65


def test_verifier_rejects_fabricated_and_needless_searches(bm25_index):
    search = KEEP_ONLY.search
    honest = bm25_index.search(["who wrote the tragedy hamlet"], topk=search.top_k)[0]
    from autodata.search import format_hits
    from autodata.trajectory import AnswerStep

    thoughts = iter(
        f"A {word} thought about where to look next."
        for word in ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
    )

    def step(query, observation):
        return SearchStep(think=next(thoughts), query=query, observation=observation, hit_ids=[])

    def answer_step(answer="William Shakespeare"):
        return AnswerStep(think="The first passage names the author of the tragedy.", answer=answer)

    real = format_hits(honest)
    ok = Trajectory(
        question="Who wrote the tragedy Hamlet?", steps=[step("who wrote the tragedy hamlet", real), answer_step()]
    )
    assert check_trajectory(ok, Expected.fact("William Shakespeare"), bm25_index, search) is None
    fake_obs = real.replace("Denmark", "Norway")
    forged = Trajectory(
        question="Who wrote the tragedy Hamlet?", steps=[step("who wrote the tragedy hamlet", fake_obs), answer_step()]
    )
    assert (
        "fabricated observation"
        in check_trajectory(forged, Expected.fact("William Shakespeare"), bm25_index, search).detail
    )
    again = Trajectory(
        question="Who wrote the tragedy Hamlet?",
        steps=[
            step("who wrote the tragedy hamlet", real),
            step("hamlet play denmark", format_hits(bm25_index.search(["hamlet play denmark"], topk=3)[0])),
            answer_step(),
        ],
    )
    assert "needless search" in check_trajectory(again, Expected.fact("William Shakespeare"), bm25_index, search).detail
    cheat_query = "William Shakespeare hamlet"
    cheat = Trajectory(
        question="Who wrote the tragedy Hamlet?",
        steps=[step(cheat_query, format_hits(bm25_index.search([cheat_query], topk=3)[0])), answer_step()],
    )
    assert check_trajectory(cheat, Expected.fact("William Shakespeare"), bm25_index, search) == (
        "hint_leak",
        "step 1's query holds the answer 'William Shakespeare' before any observation showed it",
    )
    no_search = Trajectory(question="Who wrote the tragedy Hamlet?", steps=[answer_step()])
    assert "no search" in check_trajectory(no_search, Expected.fact("William Shakespeare"), bm25_index, search).detail


def test_bad_inputs_fail_before_anything_is_written(tmp_path, monkeypatch, bm25_index):
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"id": "1", "question": "q"}\n')
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        with pytest.raises(SeedDataError, match="line 1: missing 'golden_answers'"):
            run(fake, monkeypatch, bad, tmp_path / "out1", bm25_index)
        good = tmp_path / "seeds.json"
        good.write_text(json.dumps(SEEDS))
        with SearchClient(f"http://127.0.0.1:{free_port()}", max_retries=0) as down:
            with pytest.raises(SearchUnavailable):
                with LLMSession(load_settings()) as llms:
                    synthesize(
                        good, tmp_path / "out2", recipe=KEEP_ONLY, retriever=down, llms=llms, show_progress=False
                    )
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_cli_synthesize_reports_and_exits_by_outcome(tmp_path, monkeypatch, seeds_file, capsys):
    from autodata.cli import main
    from tests.conftest import write_corpus

    dev = tmp_path / "dev.jsonl"
    dev.write_text('{"id": "d1", "question": "capital of japan", "golden_answers": ["Tokyo"]}\n')
    world = str(tmp_path / "world")
    assert (
        main(
            [
                "world",
                "create",
                world,
                "--train",
                str(seeds_file),
                "--dev",
                str(dev),
                "--corpus",
                str(write_corpus(tmp_path / "corpus.jsonl")),
            ]
        )
        == 0
    )
    monkeypatch.setenv("AUTODATA_WORLD", world)
    recipe = tmp_path / "keep.yaml"
    recipe.write_text("strategies:\n  keep: 1\n  rephrase: 0\n  multi_hop: 0\n")
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        point_roles_at(monkeypatch, fake.url)
        capsys.readouterr()
        code = main(["synthesize", "--recipe", str(recipe), "--seeds", str(seeds_file), "--out", str(tmp_path / "out")])
        out = capsys.readouterr().out
        assert code == 0 and "Accepted 5 items from 6 seeds" in out and "no_evidence 1" in out
        assert "weak" in out and "calls" in out  # the usage table

        nothing = ScriptedAgents(weak_answer="William Shakespeare")
        fake.reply = nothing
        code = main(
            [
                "--no-cache",
                "synthesize",
                "--recipe",
                str(recipe),
                "--seeds",
                str(seeds_file),
                "--limit",
                "1",
                "--out",
                str(tmp_path / "none"),
            ]
        )
        assert code == 1 and "accepted nothing" in capsys.readouterr().err
    code = main(
        [
            "synthesize",
            "--recipe",
            str(tmp_path / "missing.yaml"),
            "--seeds",
            str(seeds_file),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 1 and "Recipe file" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # no endpoints configured (the embedded model): Ray is refused before any model or Ray starts
    for role in ("challenger", "weak", "strong", "judge"):
        monkeypatch.delenv(f"AUTODATA_ROLES__{role.upper()}__BASE_URL")
    code = main(["synthesize", "--seeds", str(seeds_file), "--out", str(tmp_path / "x"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 1 and "needs an endpoint (base_url) for roles challenger, weak, strong, judge" in err
    assert not (tmp_path / "x").exists()


def test_unreachable_endpoint_fails_before_anything_is_written(tmp_path, monkeypatch, seeds_file, bm25_index):
    from autodata.errors import EndpointError

    url = f"http://127.0.0.1:{free_port()}/v1"
    point_roles_at(monkeypatch, url)
    with LLMSession(load_settings()) as llms:
        with pytest.raises(EndpointError, match="Role 'challenger'.*does not answer"):
            synthesize(
                seeds_file, tmp_path / "out", recipe=KEEP_ONLY, retriever=bm25_index, llms=llms, show_progress=False
            )
    assert not (tmp_path / "out").exists()


def test_large_seed_files_are_checked_whole_then_streamed(tmp_path, monkeypatch, bm25_index):
    import tracemalloc

    from autodata.seeds import load_seeds

    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        f.writelines(json.dumps(seed) + "\n" for seed in SEEDS[:3])
        f.writelines(
            json.dumps(
                {
                    "id": f"x{i}",
                    "question": f"filler question number {i} about nothing in the corpus",
                    "golden_answers": [f"answer {i}"],
                }
            )
            + "\n"
            for i in range(60_000)
        )
    with open(tmp_path / "bad.jsonl", "w") as f:
        f.write(big.read_text() + '{"id": "last", "question": ""}\n')

    def peak_bytes(call) -> int:
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        with pytest.raises(
            SeedDataError, match="line 60004: 'question': question is blank"
        ):  # the last line, before any work
            run(fake, monkeypatch, tmp_path / "bad.jsonl", tmp_path / "never", bm25_index)
        assert not (tmp_path / "never").exists()
        streamed = peak_bytes(lambda: run(fake, monkeypatch, big, tmp_path / "out", bm25_index, limit=3))
    held = peak_bytes(lambda: load_seeds(big))
    assert [row["seed_id"] for row in read_jsonl(tmp_path / "out" / "progress.jsonl")] == ["s1", "s2", "s3"]
    assert len(read_jsonl(tmp_path / "out" / "trajectories.jsonl")) == 2  # s3 has no evidence
    assert streamed < held / 2, (streamed, held)  # the ids, not the seeds, are kept in memory


def test_seeds_in_flight_change_nothing_but_speed(tmp_path, monkeypatch, seeds_file, bm25_index):
    """The same accepted and rejected items, one seed at a time or all at once (no cache: every call is made)."""
    recipe = Recipe()  # every strategy, so rejections and multi-hop items are compared too
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.01) as fake:
        for name, concurrency in (("one", 1), ("many", 6)):
            run(
                fake,
                monkeypatch,
                seeds_file,
                tmp_path / name,
                bm25_index,
                recipe=recipe,
                concurrency=concurrency,
                cache=False,
            )
        assert fake.peak_in_flight > 1
    for name in ("trajectories.jsonl", "rejected.jsonl"):
        one, many = (sorted(read_jsonl(tmp_path / run_dir / name), key=json.dumps) for run_dir in ("one", "many"))
        assert one == many and one
    one, many = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "many"))
    assert one["items"] == many["items"] and one["llm_totals"] == many["llm_totals"]


def test_retrievers_pickle_as_where_to_find_them(bm25_index):
    """What a Ray worker receives: the index's folder (it maps the same files), the client's settings."""
    import pickle

    copy = pickle.loads(pickle.dumps(bm25_index))
    assert copy.folder == bm25_index.folder and len(pickle.dumps(bm25_index)) < 1000
    assert copy.search(["who wrote hamlet"], topk=2) == bm25_index.search(["who wrote hamlet"], topk=2)
    client = pickle.loads(pickle.dumps(SearchClient("http://127.0.0.1:9/", timeout_s=3.5, batch_size=7)))
    assert (client.url, client.timeout_s, client.batch_size) == ("http://127.0.0.1:9/retrieve", 3.5, 7)


def test_resuming_a_long_run_reads_its_files_line_by_line(tmp_path, monkeypatch, seeds_file, bm25_index):
    """The run folder of a million-seed job: resume, progress totals and the manifest stream it."""
    import tracemalloc

    from autodata.synthesis import run_totals

    out = tmp_path / "out"
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        run(fake, monkeypatch, seeds_file, out, bm25_index)
        earlier = 50_000  # finished seeds of an earlier part of the job, a rejected candidate each
        with open(out / "rejected.jsonl", "a") as f:
            f.writelines(
                json.dumps({"seed_id": f"old{i}", "reason": "too_hard", "detail": "x" * 500}) + "\n"
                for i in range(earlier)
            )
        with open(out / "progress.jsonl", "a") as f:
            f.writelines(
                json.dumps(
                    {
                        "seed_id": f"old{i}",
                        "accepted": 0,
                        "rejected": 1,
                        "cost": {"weak": {"calls": 2, "prompt_tokens": 90, "completion_tokens": 9}},
                    }
                )
                + "\n"
                for i in range(earlier)
            )
        size = sum((out / name).stat().st_size for name in ("rejected.jsonl", "progress.jsonl"))
        tracemalloc.start()
        try:
            report = run(fake, monkeypatch, seeds_file, out, bm25_index)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert report.seeds_run_now == 0
    assert report.manifest["seeds"]["done"] == run_totals(out)["seeds_done"] == len(SEEDS) + earlier
    assert report.manifest["rejections"]["too_hard"] == earlier
    assert len(read_jsonl(out / "rejected.jsonl")) == earlier + 1  # nothing lost in the rewrite
    assert peak < size / 4, (peak, size)  # the finished ids, not the records
