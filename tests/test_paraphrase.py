"""Paraphrase contamination: a reworded held-out question with the same answer (issue 20 item 6)."""

from __future__ import annotations

import time

import pytest

from autodata.seeds import HeldOutQuestions, SeedItem

# A held-out set shaped like NQ/TriviaQA dev questions; several share "wrote", "novel", "first",
# "year" so the idf of such words is lower than that of names, as in a real set.
HELD_OUT = [
    ("dev-1", "Who wrote the novel Moby Dick?", ["Herman Melville"]),
    ("dev-2", "Who painted the Mona Lisa?", ["Leonardo da Vinci"]),
    ("dev-3", "In what year was the Treaty of Amiens signed?", ["1802"]),
    ("dev-4", "What is the capital city of Australia?", ["Canberra"]),
    ("dev-5", "Which element has the chemical symbol Fe?", ["Iron"]),
    ("dev-6", "How many players does a soccer team have on the field?", ["11", "eleven"]),
    ("dev-7", "Who was the first person to walk on the moon?", ["Neil Armstrong"]),
    ("dev-8", "What is the longest river in Africa?", ["Nile", "the Nile River"]),
    ("dev-9", "Who composed the opera The Magic Flute?", ["Wolfgang Amadeus Mozart", "Mozart"]),
    ("dev-10", "When did the Berlin Wall fall?", ["1989"]),
    ("dev-11", "Which planet is known as the Red Planet?", ["Mars"]),
    ("dev-12", "Who directed the film Jaws?", ["Steven Spielberg"]),
    ("dev-13", "What language is spoken in Brazil?", ["Portuguese"]),
    ("dev-14", "Who discovered penicillin?", ["Alexander Fleming"]),
    ("dev-15", "In which country is the city of Timbuktu?", ["Mali"]),
    ("dev-16", "What is the largest ocean on Earth?", ["Pacific Ocean", "Pacific"]),
    ("dev-17", "Who was the first President of the United States?", ["George Washington"]),
    ("dev-18", "How many sides does a hexagon have?", ["6", "six"]),
    ("dev-19", "Which band released the album Abbey Road?", ["The Beatles"]),
    ("dev-20", "Who wrote the novel Pride and Prejudice?", ["Jane Austen"]),
    ("dev-21", "Who wrote the song Yesterday?", ["Paul McCartney"]),
    ("dev-22", "Which author wrote the novel War and Peace?", ["Leo Tolstoy"]),
    ("dev-23", "In what year did the First World War end?", ["1918"]),
    ("dev-24", "In what year did the Titanic sink?", ["1912"]),
    ("dev-25", "Who was the first woman to win a Nobel Prize?", ["Marie Curie"]),
    ("dev-26", "What is the largest planet in the solar system?", ["Jupiter"]),
    ("dev-27", "Who composed the Four Seasons?", ["Antonio Vivaldi"]),
    ("dev-28", "Who wrote the opera Carmen?", ["Georges Bizet"]),
    ("dev-29", "What is the capital of Canada?", ["Ottawa"]),
    ("dev-30", "Which city is the capital of Turkey?", ["Ankara"]),
    ("dev-31", "Who was the first Emperor of Rome?", ["Augustus"]),
    ("dev-32", "In what year did Columbus first reach the Americas?", ["1492"]),
    ("dev-33", "Who played Han Solo in the film Star Wars?", ["Harrison Ford"]),
    ("dev-34", "What is the chemical symbol for gold?", ["Au"]),
    ("dev-35", "Which country has the largest population in the world?", ["India"]),
    ("dev-36", "Who wrote the poem The Raven?", ["Edgar Allan Poe"]),
    ("dev-37", "What is the smallest planet in the solar system?", ["Mercury"]),
    ("dev-38", "Who invented the telephone?", ["Alexander Graham Bell"]),
    ("dev-39", "How many bones are in the adult human body?", ["206"]),
    ("dev-40", "Which river flows through Paris?", ["Seine"]),
    ("dev-41", "Who sang the song Thriller?", ["Michael Jackson"]),
    ("dev-42", "In which city was the Declaration of Independence signed?", ["Philadelphia"]),
    ("confirm-1", "Who wrote the novel The Great Gatsby?", ["F. Scott Fitzgerald"]),
    ("confirm-2", "Which city hosted the 2012 Summer Olympics?", ["London"]),
]
# A hidden test split: questions only.
HIDDEN = [
    ("test-1", "Who wrote the play Hamlet?"),
    ("test-2", "What is the tallest mountain in the world?"),
]

# Rewordings of a held-out question, with its answer: each must be caught.
PARAPHRASES = [
    ("Which author wrote Moby-Dick?", ["Herman Melville"], "dev-1"),
    ("Moby Dick, the novel, was written by whom?", ["herman melville"], "dev-1"),
    ("The Mona Lisa was painted by which artist?", ["Leonardo da Vinci"], "dev-2"),
    ("The Treaty of Amiens was signed in which year?", ["1802"], "dev-3"),
    ("Name the capital of Australia.", ["Canberra"], "dev-4"),
    ("What chemical element is represented by the symbol Fe?", ["iron"], "dev-5"),
    ("In what year did the Berlin Wall come down?", ["1989"], "dev-10"),
    ("Which is the longest river in Africa?", ["The Nile"], "dev-8"),
    ("Which planet is nicknamed the Red Planet?", ["Mars"], "dev-11"),
    ("Who was the first US President?", ["George Washington"], "dev-17"),
    ("Who discovered the antibiotic penicillin?", ["Alexander Fleming"], "dev-14"),
]
# Different questions that happen to share a held-out question's answer: none may be caught.
SAME_ANSWER_UNRELATED = [
    ("In what year was Victor Hugo born?", ["1802"]),
    ("Who wrote the novel Billy Budd?", ["Herman Melville"]),
    ("Who was the first Commander-in-Chief of the Continental Army?", ["George Washington"]),
    ("How many strings does a standard guitar have?", ["6", "six"]),
    ("Which city is home to Parliament House of Australia?", ["Canberra"]),
    ("Which river flows through Cairo?", ["Nile"]),
    ("Which planet is fourth from the Sun?", ["Mars"]),
    ("Who composed the opera Don Giovanni?", ["Mozart"]),
    ("Which band recorded the song Hey Jude?", ["The Beatles"]),
    ("In what year did the Titanic set sail from Southampton?", ["1912"]),
]


def _index(**kwargs) -> HeldOutQuestions:
    items = [SeedItem(id=i, question=q, golden_answers=a) for i, q, a in HELD_OUT]
    items += [SeedItem(id=i, question=q) for i, q in HIDDEN]
    return HeldOutQuestions(items, **kwargs)


@pytest.mark.parametrize(("question", "answers", "held_out_id"), PARAPHRASES)
def test_paraphrase_with_the_same_answer_is_found(question, answers, held_out_id):
    found = _index().paraphrase(question, answers)
    assert found is not None and found["held_out_id"] == held_out_id
    assert found["held_out_question"] == {i: q for i, q, _ in HELD_OUT}[held_out_id]
    assert 0.5 <= found["similarity"] <= 1.0


@pytest.mark.parametrize(("question", "answers"), SAME_ANSWER_UNRELATED)
def test_unrelated_question_sharing_an_answer_is_not_a_paraphrase(question, answers):
    assert _index().paraphrase(question, answers) is None


def test_default_threshold_separates_paraphrases_from_same_answer_pairs():
    """The default 0.5 sits in the gap: lowest paraphrase above it, highest unrelated pair below."""
    scores = _index(min_paraphrase_similarity=0.0)
    paraphrase = [scores.paraphrase(q, a)["similarity"] for q, a, _ in PARAPHRASES]
    unrelated = [scores.paraphrase(q, a)["similarity"] for q, a in SAME_ANSWER_UNRELATED]
    # Measured: paraphrases 0.53-1.0, unrelated 0.0-0.43.
    assert max(unrelated) + 0.025 <= _index().min_paraphrase_similarity <= min(paraphrase) - 0.025


def test_same_question_with_a_different_answer_is_not_a_paraphrase():
    index = _index()
    assert index.paraphrase("Who wrote the novel Moby Dick?", ["Herman Melville"])["similarity"] == 1.0
    assert index.paraphrase("Who wrote the novel Moby Dick?", ["Nathaniel Hawthorne"]) is None
    # Each question's answer is another held-out question's: still no match either way.
    assert index.paraphrase("Who painted the Mona Lisa?", ["Herman Melville"]) is None
    assert index.paraphrase("Who wrote Moby Dick?", ["Leonardo da Vinci"]) is None


def test_answers_match_after_normalization_in_any_alias():
    index = _index()
    assert index.paraphrase("Who penned Moby-Dick?", ["Ishmael", "HERMAN MELVILLE."])["held_out_id"] == "dev-1"
    assert index.paraphrase("What's the longest river of Africa?", ["White Nile"]) is None  # not an alias
    assert index.paraphrase("What's the longest river of Africa?", ["the nile river"])["held_out_id"] == "dev-8"


def test_a_single_answer_string_is_one_answer_not_its_characters():
    items = [SeedItem(id="h", question="How many sides does a hexagon have?", golden_answers=["6"])]
    assert HeldOutQuestions(items).paraphrase("How many sides does a hexagon have?", "6")["held_out_id"] == "h"
    assert HeldOutQuestions(items).paraphrase("How many sides does a hexagon have?", "1602") is None


def test_most_similar_of_several_same_answer_questions_wins():
    items = [
        SeedItem(id="a", question="In what year did the Titanic sink?", golden_answers=["1912"]),
        SeedItem(id="b", question="In what year was New Mexico admitted as a state?", golden_answers=["1912"]),
    ]
    found = HeldOutQuestions(items).paraphrase("New Mexico became a US state in which year?", ["1912"])
    assert found is not None and found["held_out_id"] == "b"


def test_hidden_split_items_never_match():
    index = _index(min_paraphrase_similarity=0.0)
    assert index.paraphrase("Who wrote the play Hamlet?", ["William Shakespeare"]) is None
    hidden_only = HeldOutQuestions([SeedItem(id="test-1", question="Who wrote the play Hamlet?")])
    assert hidden_only.paraphrase("Who wrote the play Hamlet?", ["Who wrote the play Hamlet?"]) is None
    assert hidden_only.overlap(SeedItem(id="s", question="Who wrote the play Hamlet?")) is not None


def test_empty_held_out_set_returns_none():
    assert HeldOutQuestions([]).paraphrase("Who wrote the novel Moby Dick?", ["Herman Melville"]) is None


def test_threshold_is_a_constructor_keyword():
    question, answers, _ = PARAPHRASES[0]
    assert _index(min_paraphrase_similarity=0.5).paraphrase(question, answers) is not None
    assert _index(min_paraphrase_similarity=0.99).paraphrase(question, answers) is None


def test_stopword_only_question_matches_nothing():
    assert _index(min_paraphrase_similarity=0.0).paraphrase("Who is it?", ["Herman Melville"])["similarity"] == 0.0


def test_build_is_fast_for_thousands_of_questions():
    items = [
        SeedItem(
            id=str(i),
            question=f"Who founded company{i} in city{i % 97} in year {1800 + i % 200}?",
            golden_answers=[f"person{i}"],
        )
        for i in range(5000)
    ]
    started = time.perf_counter()
    index = HeldOutQuestions(items)
    assert time.perf_counter() - started < 2.0  # about 0.1 s here; the bound only catches a blow-up
    found = index.paraphrase("company1234 was founded in city70 by whom, and in which year (2034)?", ["person1234"])
    assert found is not None and found["held_out_id"] == "1234"
