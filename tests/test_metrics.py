"""EM / SubEM / F1 agree with the reference code (REFERENCE.md, FlashRAG) on cases we hold."""

import random
import re
import string

import pytest

from evals.metrics import exact_match, f1_score, normalize_answer, score_answers, sub_exact_match


def reference_normalize_answer(s):
    # Verbatim from REFERENCE.md (FlashRAG / Search-R1).
    def remove_articles(t):
        return re.sub(r"\b(a|an|the)\b", " ", t)  # noqa: E704

    def white_space_fix(t):
        return " ".join(t.split())  # noqa: E704

    def remove_punc(t):
        return "".join(ch for ch in t if ch not in set(string.punctuation))  # noqa: E704

    return white_space_fix(remove_articles(remove_punc(s.lower())))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Beatles", "beatles"),
        ("  a  cat,   an apple! ", "cat apple"),
        ("U.S.A.", "usa"),
        ("Théâtre", "théâtre"),
        ("the", ""),
        ("Anthem", "anthem"),  # "an" only as a whole word
        ("O'Neill", "oneill"),
        ("tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer_cases(text, expected):
    assert normalize_answer(text) == expected
    assert reference_normalize_answer(text) == expected


def test_normalize_answer_matches_reference_on_random_strings():
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.punctuation + " \t\n" + "éß"
    words = ["the", "a", "an", "The", "An", "THE", "apple"]
    for _ in range(2000):
        parts = [
            rng.choice(words) if rng.random() < 0.4 else "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
            for _ in range(rng.randint(0, 6))
        ]
        text = rng.choice(["", " ", "  "]).join(parts)
        assert normalize_answer(text) == reference_normalize_answer(text), repr(text)


@pytest.mark.parametrize(
    "prediction, golden, em, subem",
    [
        ("The Beatles", ["Beatles"], 1.0, 1.0),
        ("beatles.", ["The Beatles"], 1.0, 1.0),
        ("William", ["William III of England", "William"], 1.0, 1.0),
        ("King William III of England", ["William III of England"], 0.0, 1.0),
        ("1999", ["2000"], 0.0, 0.0),
        ("", ["Paris"], 0.0, 0.0),
        ("PARIS,   France", ["paris france"], 1.0, 1.0),
        ("Destiny's Child", ["Destiny 's Child"], 0.0, 0.0),  # normalization keeps the space: known NQ quirk
    ],
)
def test_exact_and_sub_exact_match(prediction, golden, em, subem):
    assert exact_match(prediction, golden) == em
    assert sub_exact_match(prediction, golden) == subem


def test_regex_mode_is_full_match_for_em_and_search_for_subem():
    pattern = [r"\d{4}|nineteen \w+"]
    assert exact_match("1969.", pattern, regex=True) == 1.0
    assert exact_match("in 1969", pattern, regex=True) == 0.0
    assert sub_exact_match("in 1969", pattern, regex=True) == 1.0
    assert exact_match("Nineteen Sixty", pattern, regex=True) == 1.0  # case-insensitive


def test_f1_partial_credit_and_closed_answers():
    assert f1_score("William III", ["William III of England"]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1_score("yes", ["no"]) == 0.0
    assert f1_score("yes it is", ["yes"]) == 0.0  # a closed golden answer needs an exact match
    assert f1_score("no", ["no"]) == 1.0
    assert f1_score("Paris", ["Lyon", "paris"]) == 1.0


def test_score_answers_means_and_per_example():
    means, per_example = score_answers(["The Beatles", "1999", "King Louis"], [["Beatles"], ["2000"], ["Louis"]])
    assert per_example["em"] == [1.0, 0.0, 0.0]
    assert per_example["subem"] == [1.0, 0.0, 1.0]
    assert means["em"] == pytest.approx(1 / 3)
    assert means["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    with pytest.raises(ValueError):
        score_answers(["a"], [])
