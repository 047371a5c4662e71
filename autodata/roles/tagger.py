"""Tagger (judge role): the agentic-factual two-layer classification of an accepted question.

It tags the question an item asks (what the challenger wrote, or the seed question where it was
kept as is), not the seed it came from. Reads: question. Writes: task_type, needs_search,
evidence_scope, recommended_sources.
"""

from typing import Annotated, Literal

import dspy
from pydantic import Field, StringConstraints

TaskType = Literal[
    "timely_fact",
    "document_based",
    "false_premise",
    "scope_ambiguity",
    "conflicting_evidence",
    "insufficient_evidence",
    "multi_hop_composition",
    "simple_fact",
]


class TagSeed(dspy.Signature):
    """Classify a factual question (instructions come from the recipe)."""

    question: str = dspy.InputField()
    task_type: TaskType = dspy.OutputField(desc="first layer: the kind of factual task")
    needs_search: bool = dspy.OutputField(desc="whether answering needs a search")
    evidence_scope: Literal["closed_document", "open_retrieval"] = dspy.OutputField()
    recommended_sources: Annotated[list[Annotated[str, StringConstraints(max_length=40)]], Field(max_length=3)] = (
        dspy.OutputField(desc="kinds of sources to consult, e.g. encyclopedia")
    )


class Tagger(dspy.Module):
    def __init__(self, instructions: str):
        super().__init__()
        self.tag = dspy.Predict(TagSeed.with_instructions(instructions))

    def forward(self, question: str, config: dict) -> dspy.Prediction:
        return self.tag(question=question, config=config)
