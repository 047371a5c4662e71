"""Tagger (judge role): the second layer of an accepted question's two-layer classification.

It tags the question an item asks (what the challenger wrote, or the seed question where it was
kept as is), not the seed it came from; the first layer, the task type, is the strategy that
made the item (`autodata.stages.tagging`). Reads: question. Writes: needs_search,
evidence_scope, recommended_sources.
"""

from typing import Annotated, Literal

import dspy
from pydantic import Field, StringConstraints


class TagSeed(dspy.Signature):
    """Tag how a factual question is answered (instructions come from the recipe)."""

    question: str = dspy.InputField()
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
