"""Stage 6: the accepted question's two-layer classification.

The first layer, the task type, is the strategy's (`stages.base.TASK_TYPES`): it is what the
item was made and verified to be. The tagger adds the second layer (does it need a search, is
the evidence one document or open retrieval, which kinds of sources to consult), checked here:
a source that is blank or looks like a file path or URL is dropped.
"""

from __future__ import annotations

import re

from autodata.items import Tags
from autodata.stages.base import Candidate, Roles, rollout

_NOT_A_SOURCE_KIND = re.compile(r"[/\\]|\.[a-z]{2,4}$|^\W*$")  # "./test/1357426908.json", "", "..."


def tag_question(roles: Roles, c: Candidate) -> Tags:
    """The tags of question `c` (the second layer None if the tagger's reply could not be parsed)."""
    config = rollout(roles.hash, c.seed_id, c.round, "tag")
    found = roles.ask("judge", lambda: roles.tagger(question=c.question, config=config))
    if found is None:
        return Tags(task_type=c.task_type)
    sources = [s.strip() for s in found.recommended_sources if not _NOT_A_SOURCE_KIND.search(s.strip())]
    return Tags(
        task_type=c.task_type,
        needs_search=found.needs_search,
        evidence_scope=found.evidence_scope,
        recommended_sources=sources or None,
    )
