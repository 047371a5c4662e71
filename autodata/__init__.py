"""autodata: meta-optimized synthesis of search-augmented SFT data.

The library API lives in `autodata.api`; the CLI (`autodata ...`) is a thin layer over it.
Importing the package imports neither: the API's names below load on first use, so the
core modules (`autodata.settings`, `autodata.world`, ...) stay importable on their own.
"""

from autodata._version import __version__
from autodata.errors import AutodataError
from autodata.settings import Settings, load_settings

_API_NAMES = ("build_index", "check_data", "create_world", "demo_searches", "prepare_world", "retriever", "score",
              "search", "serve_retriever")  # fmt: skip

__all__ = ["AutodataError", "Settings", "__version__", "load_settings", *_API_NAMES]


def __getattr__(name: str):
    if name in _API_NAMES:
        from autodata import api

        return getattr(api, name)
    raise AttributeError(f"module 'autodata' has no attribute {name!r}")
