"""Settings: defaults, config files, environment overrides, masking."""

import pytest

from autodata.errors import ConfigError
from autodata.settings import load_settings, mask_url


def test_defaults_point_at_the_demo_world(tmp_path):
    settings = load_settings()
    assert settings.home_dir == tmp_path / "home"
    assert settings.index_dir == tmp_path / "home" / "world" / "index"
    assert settings.retriever.url is None
    assert settings.effective_tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert settings.endpoint("challenger").base_url is None  # the embedded model


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_config_file_then_environment_wins(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"autodata{suffix}"
    if suffix == ".toml":
        path.write_text(
            '[retriever]\nurl = "http://file:8000/retrieve"\n[roles.strong]\nmodel = "qwen-72b"\n'
            'base_url = "http://file:8001/v1"\n'
        )
    else:
        path.write_text(
            "retriever:\n  url: http://file:8000/retrieve\nroles:\n  strong:\n"
            "    model: qwen-72b\n    base_url: http://file:8001/v1\n"
        )
    monkeypatch.setenv("AUTODATA_ROLES__STRONG__BASE_URL", "http://env:9000/v1")
    settings = load_settings(path)
    assert settings.retriever.url == "http://file:8000/retrieve"
    assert settings.endpoint("strong").model == "qwen-72b"  # from the file
    assert settings.endpoint("strong").base_url == "http://env:9000/v1"  # the variable wins


def test_bad_config_is_a_clear_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[retriever]\nurll = "x"\n')
    with pytest.raises(ConfigError, match="retriever.urll: Extra inputs are not permitted"):
        load_settings(path)
    path.write_text("[roles.judgee]\nmodel = 'x'\n")
    with pytest.raises(ConfigError, match="roles.judgee"):
        load_settings(path)
    path.write_text("not = [valid")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_masked_dump_hides_secrets(monkeypatch):
    monkeypatch.setenv("AUTODATA_ROLES__JUDGE__API_KEY_ENV", "MY_KEY")
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    monkeypatch.setenv("AUTODATA_OPTUNA_STORAGE", "postgresql://bob:hunter2@db:5432/optuna")
    dump = load_settings().masked_dump()
    text = repr(dump)
    assert "sk-secret-value" not in text and "hunter2" not in text
    assert dump["roles"]["judge"]["api_key"] == "****"
    assert dump["roles"]["weak"]["api_key"] is None
    assert dump["optuna_storage"] == "postgresql://bob:****@db:5432/optuna"


def test_mask_url_leaves_plain_urls():
    assert mask_url("http://127.0.0.1:8000/retrieve") == "http://127.0.0.1:8000/retrieve"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_url(None) is None


def test_the_embedded_server_processes_prompts_on_up_to_four_cores_and_generates_on_one(monkeypatch, tmp_path):
    from autodata.llm.embedded import EmbeddedServer

    def threads(settings):
        argv = EmbeddedServer(tmp_path / "m.gguf", settings.embedded, log_file=tmp_path / "log").command
        return int(argv[argv.index("--n_threads") + 1]), int(argv[argv.index("--n_threads_batch") + 1])

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert threads(load_settings()) == (1, 4)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert threads(load_settings()) == (1, 2)
    monkeypatch.setenv("AUTODATA_EMBEDDED__N_THREADS_BATCH", "1")  # a busy machine
    assert threads(load_settings()) == (1, 1)
