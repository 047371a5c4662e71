"""Challenger (challenger role): writes a candidate question from a seed and its evidence.

Reads: strategy, evidence (numbered passages), seed question and answer, feedback from
the previous round. Writes: question, answer, supporting_passages (passage numbers).
"""

import dspy

from autodata.roles._types import PassageNumbers, Question, ShortAnswer


class ProposeQuestion(dspy.Signature):
    """Write one grounded question (instructions come from the recipe)."""

    strategy: str = dspy.InputField(desc="how to write the question")
    evidence: str = dspy.InputField(desc="numbered passages: [n] title: text")
    seed_question: str = dspy.InputField()
    seed_answer: str = dspy.InputField()
    feedback: str = dspy.InputField(desc="what was wrong with the previous attempt; empty at first")
    question: Question = dspy.OutputField(desc="one atomic question ending with '?'")
    answer: ShortAnswer = dspy.OutputField(desc="a short phrase copied from a cited passage")
    supporting_passages: PassageNumbers = dspy.OutputField(desc="numbers of the passages stating the answer")


class Challenger(dspy.Module):
    def __init__(self, instructions: str):
        super().__init__()
        self.propose = dspy.Predict(ProposeQuestion.with_instructions(instructions))

    def forward(
        self, *, strategy: str, evidence: str, seed_question: str, seed_answer: str, feedback: str, config: dict
    ) -> dspy.Prediction:
        return self.propose(
            strategy=strategy,
            evidence=evidence,
            seed_question=seed_question,
            seed_answer=seed_answer,
            feedback=feedback,
            config=config,
        )
