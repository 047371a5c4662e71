"""autodata: meta-optimized synthesis of search-augmented SFT data.

The library API lives in `autodata.api` (`from autodata import api`); the CLI
(`autodata ...`) is a thin layer over it. Importing the package imports neither, so the
core modules (`autodata.settings`, `autodata.world`, ...) stay importable on their own.
"""

from autodata._version import __version__
from autodata.errors import AutodataError
from autodata.settings import Settings, load_settings

__all__ = ["AutodataError", "Settings", "__version__", "load_settings"]
