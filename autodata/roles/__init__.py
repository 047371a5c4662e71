"""The Agentic Self-Instruct roles, one DSPy signature set and one small module each.

Reads and writes of every module are listed in its docstring. Instructions of the
tagger, challenger and verifier come from the recipe (optimizable); the solvers' come
from `prompts/` and are never optimized (an optimizer that could make the weak solver
weak would hack the acceptance rule).
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # else importing dspy stalls on network retries

from autodata.roles._adapter import SchemaJSONAdapter
from autodata.roles.challenger import Challenger
from autodata.roles.solvers import StrongSolver, WeakSolver
from autodata.roles.tagger import Tagger
from autodata.roles.verifier import Expected, Verifier, check_trajectory

__all__ = [
    "Challenger",
    "Expected",
    "SchemaJSONAdapter",
    "StrongSolver",
    "Tagger",
    "Verifier",
    "WeakSolver",
    "check_trajectory",
]
