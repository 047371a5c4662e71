"""The few exceptions autodata raises on purpose.

Every message says what was wrong and what to do about it. The CLI turns any
`AutodataError` into one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations


def parser_limit(err: ValueError | RecursionError) -> str:
    """In a few words, the limit a JSON or YAML parser met: nesting too deep for Python's stack, or a
    number of more than 4,300 digits (Python's integer conversion limit)."""
    return "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]


class AutodataError(Exception):
    """Base class of every error autodata raises on purpose."""


class ConfigError(AutodataError):
    """The settings (config file or AUTODATA_* variables) are invalid."""


class SeedDataError(AutodataError):
    """A seed, split or predictions file is malformed."""


class CorpusError(AutodataError):
    """A corpus file or an index folder is malformed or missing."""


class WorldError(AutodataError):
    """A pinned data or model package could not be fetched, or the demo world not built."""


class SearchUnavailable(AutodataError):
    """The retriever could not be reached or answered with an error."""


class EndpointError(AutodataError):
    """An LLM endpoint is unreachable, misconfigured, or kept failing after retries."""


class DamagedFileError(AutodataError):
    """A JSONL file autodata appends to has a damaged line with intact records after it."""


class BudgetExceeded(AutodataError):
    """The job's LLM call or token budget is spent; the job stops cleanly."""


class RecipeError(AutodataError):
    """A recipe is invalid (unknown field, value out of range, missing instruction)."""


class ProxyTrainingFailed(AutodataError):
    """The quick SFT proxy could not train or score (no data, not a model, conversion failed)."""
