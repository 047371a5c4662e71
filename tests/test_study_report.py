"""`optimizers.study_report.study_report`: the HTML page of a study, on small studies recorded as `run_study` does."""

from html.parser import HTMLParser

import optuna
import pytest

from autodata.errors import AutodataError
from optimizers.study import BASELINE_PARAMS, study_table
from optimizers.study_report import study_report

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "embed", "source", "track", "wbr"}
PROMPTS = {
    ("challenger", 1): "You write questions.\nAsk about one fact.",
    ("challenger", 2): "You write questions.\nAsk about two linked facts.",
}

# The searched parameters: the baseline's values, and two choices of top-k and of the challenger's prompt.
SPACE = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in BASELINE_PARAMS.items()} | {
    "top_k": optuna.distributions.CategoricalDistribution([3, 5]),
    "challenger_prompt": optuna.distributions.CategoricalDistribution(["seed", "latest"]),
}


def a_study(storage: str, name: str, trials=((0.1, {}), (0.5, {"top_k": 5, "challenger_prompt": "latest"}), None)):
    """Trial 0 (the default recipe), then one trial per (shift, changed params), None a failed trial; a trial that
    picks the "latest" challenger prompt uses its version 2 (as `tests/test_records.py` `a_study`)."""
    study = optuna.create_study(directions=["maximize"], storage=storage, study_name=name)
    for number, trial_spec in enumerate(trials):
        shift, changes = trial_spec or (0.0, {})
        params = {**BASELINE_PARAMS, **changes}
        study.enqueue_trial(params)
        trial = study.ask(SPACE)
        trial.set_user_attr("recipe_hash", f"h{number}")
        challenger = 2 if params["challenger_prompt"] == "latest" else 1
        trial.set_user_attr("prompt_versions", {"challenger": challenger, "tagger": 1, "verifier": 1})
        if trial_spec is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr("accepted_items", 3)
        trial.set_user_attr("llm_calls_per_accepted_item", 10.0 - number)
        per_question = [[shift, shift + 0.1, shift + 0.2]]
        trial.set_user_attr("evidence", {"question_ids": ["a", "b", "c"], "per_question": per_question})
        study.tell(trial, shift + 0.1)
    return study


class Page(HTMLParser):
    """Every element of the page: (tag, attributes, its text, nested text included)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict, list[str]]] = []
        self.open: list[tuple[str, dict, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = (tag, dict(attrs), [])
        self.elements.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, _, text in self.open:
            text.append(data)

    def find(self, **attrs) -> list[tuple[str, dict, str]]:
        """Elements with these attributes (`data_trial="1"` stands for data-trial; None: any value)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            (tag, a, "".join(text))
            for tag, a, text in self.elements
            if all(k in a and (v is None or a[k] == v) for k, v in wanted.items())
        ]

    def within(self, **attrs) -> list[tuple[str, dict, str]]:
        """The elements inside the first element with these attributes."""
        first = self.find(**attrs)[0]
        start = next(i for i, e in enumerate(self.elements) if e[1] is first[1])
        end = next((i for i, e in enumerate(self.elements[start + 1 :], start + 1) if e[0] == first[0]), None)
        return [(tag, a, "".join(text)) for tag, a, text in self.elements[start + 1 : end]]


def fake_prompt(role: str, version: int) -> str:
    return PROMPTS[role, version]


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"


def test_every_trial_has_a_row_with_its_score_and_the_best_is_marked(tmp_path, storage):
    a_study(storage, "s")
    rows, best = study_table("s", storage)
    page = Page(study_report("s", storage, tmp_path / "page.html", prompt_text=fake_prompt).read_text())
    assert (
        [a["data-trial"] for _, a, _ in page.find(data_trial=None)] == [str(r.trial) for r in rows] == ["0", "1", "2"]
    )
    for row in rows:
        (score,) = [a["data-score"] for tag, a, _ in page.within(data_trial=str(row.trial)) if "data-score" in a]
        assert (None if score == "-" else float(score)) == row.score
    (marked,) = [r.trial for r in rows if "best" in [text for _, _, text in page.within(data_trial=str(r.trial))]]
    assert best.trial == 1 and marked == 1 and page.find(data_trial="1")[0][1].get("class") == "best"
    assert any("gain counts only where the interval" in text for _, _, text in page.find(class_="small"))
    gains = [r.trial for r in rows if any(a.get("class") == "gain" for _, a, _ in page.within(data_trial=str(r.trial)))]
    assert gains == [1] and rows[1].delta_vs_default.low > 0  # its paired difference from trial 0 lies above 0


def test_importances_show_as_bars_or_say_the_trials_are_too_few(tmp_path, storage):
    a_study(storage, "two")
    page = Page(study_report("two", storage, tmp_path / "two.html", prompt_text=fake_prompt).read_text())
    shown = {a["data-importance"] for _, a, _ in page.find(data_importance=None)}
    assert {"top_k", "challenger_prompt"} <= shown
    a_study(storage, "one", trials=((0.1, {}),))
    text = study_report("one", storage, tmp_path / "one.html").read_text()
    assert "Not enough trials" in text and not Page(text).find(data_importance=None)


def test_the_prompt_diff_shows_the_changed_line_of_the_changed_role_only(tmp_path, storage):
    a_study(storage, "s")
    asked = []

    def prompt(role, version):
        asked.append((role, version))
        return fake_prompt(role, version)

    page = Page(study_report("s", storage, tmp_path / "page.html", prompt_text=prompt).read_text())
    (challenger,) = [text for tag, _, text in page.find(data_role="challenger") if tag == "pre"]
    assert (
        "-Ask about one fact." in challenger.splitlines() and "+Ask about two linked facts." in challenger.splitlines()
    )
    assert " You write questions." in challenger.splitlines()  # unchanged lines are context
    assert "Same as the default" in page.find(data_role="tagger")[0][2]
    assert sorted(asked) == [("challenger", 1), ("challenger", 2)]


def test_the_page_loads_nothing_from_the_network(tmp_path, storage):
    a_study(storage, "s")
    text = study_report("s", storage, tmp_path / "page.html", prompt_text=fake_prompt).read_text().lower()
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    assert "<svg" in text and "<style>" in text


def test_an_unknown_study_raises_and_writes_nothing(tmp_path, storage):
    a_study(storage, "s")
    with pytest.raises(AutodataError, match="No study named 'nope'"):
        study_report("nope", storage, tmp_path / "page.html")
    assert list(tmp_path.iterdir()) == [tmp_path / "studies.db"]


def test_a_run_report_is_linked_only_once_it_exists(tmp_path, storage):
    a_study(storage, "s")
    runs = tmp_path / "home" / "studies" / "s" / "runs"
    (runs / "h1").mkdir(parents=True)
    (runs / "h1" / "report.html").write_text("<html></html>")
    (runs / "h0").mkdir()  # a folder without a report
    out = tmp_path / "reports" / "page.html"
    page = Page(study_report("s", storage, out, runs_dir=runs, prompt_text=fake_prompt).read_text())
    (link,) = [a["href"] for tag, a, _ in page.within(data_trial="1") if tag == "a"]
    assert not link.startswith("/") and (out.parent / link).resolve() == (runs / "h1" / "report.html").resolve()
    for trial in ("0", "2"):
        assert not [a for tag, a, _ in page.within(data_trial=trial) if tag == "a"]
        assert "no report yet" in page.find(data_trial=trial)[0][2]


@pytest.mark.slow
def test_the_study_page_renders_in_headless_chromium(tmp_path, storage):
    import shutil
    import subprocess

    from tests.infra import CHROMIUM_FLAGS, artifact

    a_study(storage, "s")
    page = study_report("s", storage, tmp_path / "page.html", prompt_text=fake_prompt)
    chromium = shutil.which("chromium") or pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=True)
    rendered = Page(dom.stdout)
    rows, _ = study_table("s", storage)
    assert [a["data-trial"] for _, a, _ in rendered.find(data_trial=None)] == [str(r.trial) for r in rows]
    assert "<svg" in dom.stdout  # the history chart survived the browser's parser
    shot = artifact("study-report.png")
    shot.unlink(missing_ok=True)
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], timeout=180, check=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
