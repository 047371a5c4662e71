"""The inner loop's stages, each a function with typed inputs and outputs, testable alone.

    base          what they share: `Candidate`, `Problem`, `Roles`, rollout ids
    evidence      the seed's gates (`contamination`) and evidence pack (`search_evidence`)
    proposal      the round's strategy and candidate question (`pick_strategy`, `propose`)
    screening     the programmatic quality checks (`screen`, `CHECKS`)
    acceptance    the acceptance rule and early stopping, pure functions of the scores
    solving       the weak and strong attempts (`run_solvers`) and the strong solver's hint
    verification  the verifier's choice of the trajectory to keep (`verify`)
    tagging       the tagger's classification of the accepted question (`tag_question`)
    assembly      the records written: an accepted item (`accepted_item`), a `rejection`

A stage that calls a role takes the `Roles` running it (`autodata.pipeline.SeedProcessor`),
which wires the stages together for one seed.
"""

from autodata.stages.acceptance import (
    Verdict,
    decided,
    final_verdict,
    next_solver,
    reachable,
    rule_verdict,
    sample_solvers,
    strong_settled,
    verdict_detail,
    verdicts,
)
from autodata.stages.assembly import accepted_item, rejection
from autodata.stages.base import Candidate, Problem, Roles, as_question, number_passages, rollout, title_of
from autodata.stages.evidence import NO_EVIDENCE, Evidence, contamination, paraphrase, search_evidence
from autodata.stages.proposal import STRATEGIES, STRATEGY_GUIDES, Proposal, Task, find_bridge, pick_strategy, propose
from autodata.stages.screening import (
    CHECKS,
    MAX_ANSWER_WORDS,
    MAX_QUESTION_WORDS,
    NEAR_DUPLICATE_THRESHOLD,
    SOLVER_DIRECTED,
    screen,
)
from autodata.stages.solving import Attempts, StrongAttempt, WeakAttempt, run_solvers, strong_hint
from autodata.stages.tagging import tag_question
from autodata.stages.verification import verify

__all__ = [
    "CHECKS",
    "MAX_ANSWER_WORDS",
    "MAX_QUESTION_WORDS",
    "NEAR_DUPLICATE_THRESHOLD",
    "NO_EVIDENCE",
    "SOLVER_DIRECTED",
    "STRATEGIES",
    "STRATEGY_GUIDES",
    "Attempts",
    "Candidate",
    "Evidence",
    "Problem",
    "Proposal",
    "Roles",
    "StrongAttempt",
    "Task",
    "Verdict",
    "WeakAttempt",
    "accepted_item",
    "as_question",
    "contamination",
    "decided",
    "final_verdict",
    "find_bridge",
    "next_solver",
    "number_passages",
    "paraphrase",
    "pick_strategy",
    "propose",
    "reachable",
    "rejection",
    "rollout",
    "rule_verdict",
    "run_solvers",
    "sample_solvers",
    "screen",
    "search_evidence",
    "strong_hint",
    "strong_settled",
    "tag_question",
    "title_of",
    "verdict_detail",
    "verdicts",
    "verify",
]
