"""Stage 6: the tagger's classification of the accepted question (not of its seed)."""

from __future__ import annotations

from autodata.items import Tags
from autodata.stages.base import Candidate, Roles, rollout


def tag_question(roles: Roles, c: Candidate) -> Tags:
    """The tags of question `c` (all None if the reply could not be parsed). A two-hop item is
    `multi_hop_composition` by construction, whatever the tagger says."""
    config = rollout(roles.hash, c.seed_id, c.round, "tag")
    found = roles.ask("judge", lambda: roles.tagger(question=c.question, config=config))
    tags = Tags(**{name: found[name] for name in Tags.model_fields}) if found is not None else Tags()
    if c.hops == 2:
        tags = tags.model_copy(update={"task_type": "multi_hop_composition"})
    return tags
