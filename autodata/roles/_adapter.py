"""A JSONAdapter that sends the signature's output schema as a constrained-decoding request.

Small models rarely follow DSPy's text formats (ChatAdapter parsed 0 of 40 SmolLM2
replies); with the output schema enforced by the server's grammar every reply parses.
Field constraints come from the annotations (`Annotated[str, StringConstraints(...)]`,
`Literal[...]`), so optimizers can rewrite the instructions without breaking parsing.
Endpoints that cannot constrain decoding still get valid requests: the schema then only
documents the format.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import dspy
from pydantic import TypeAdapter


@lru_cache(maxsize=1024)  # built per call, it was a tenth of a synthesis worker's CPU
def output_schema(signature: type[dspy.Signature]) -> dict[str, Any]:
    properties = {
        # pydantic moves Annotated[...] constraints into `metadata`; put them back for the schema
        name: TypeAdapter(
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        ).json_schema()
        for name, field in signature.output_fields.items()
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class SchemaJSONAdapter(dspy.JSONAdapter):
    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": signature.__name__, "schema": output_schema(signature)},
        }
        return super().__call__(lm, {**lm_kwargs, "response_format": response_format}, signature, demos, inputs)
