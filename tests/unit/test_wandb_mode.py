"""Which W&B mode a run uses: logger.mode, else WANDB_MODE, else online when a key is found anywhere."""

import pytest

from aotp.cli import ConfigError
from aotp.trainer.loggers import find_wandb_key, wandb_mode


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return tmp_path


def test_no_key_anywhere_is_offline(clean_env):
    assert find_wandb_key() is None
    mode, why = wandb_mode(None)
    assert mode == "offline" and why.startswith("no W&B API key found")


@pytest.mark.parametrize("value, mode", [("online", "online"), ("offline", "offline"), ("disabled", "disabled"),
                                         ("dryrun", "offline"), ("ONLINE", "online")])
def test_wandb_mode_environment_is_respected(clean_env, monkeypatch, value, mode):
    monkeypatch.setenv("WANDB_MODE", value)
    assert wandb_mode(None) == (mode, f"WANDB_MODE={value.lower()}")


def test_logger_mode_wins_and_bad_values_are_refused(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode("disabled") == ("disabled", "logger.mode=disabled")
    with pytest.raises(ConfigError, match="logger.mode='cloud'; valid: online, offline, disabled"):
        wandb_mode("cloud")
    monkeypatch.setenv("WANDB_MODE", "cloud")
    with pytest.raises(ConfigError, match="WANDB_MODE='cloud'; valid: online, offline, disabled"):
        wandb_mode(None)


def test_key_from_wandb_login_netrc_means_online(clean_env, monkeypatch):
    netrc = clean_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert find_wandb_key() == f"{netrc} (api.wandb.ai)"
    assert wandb_mode(None) == ("online", f"API key from {netrc} (api.wandb.ai)")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another host does not count
    assert find_wandb_key() is None


def test_key_from_environment_or_settings_means_online(clean_env, monkeypatch):
    settings = clean_env / "wandb-config" / "settings"
    settings.parent.mkdir()
    settings.write_text("[default]\napi_key = " + "k" * 40 + "\n")
    assert wandb_mode(None) == ("online", f"API key from {settings}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(None) == ("online", "API key from WANDB_API_KEY")
