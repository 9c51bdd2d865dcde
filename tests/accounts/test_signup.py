"""Issue 17, sign-up: the ``accounts.registration`` setting (the sign-up routes come later)."""

from pathlib import Path

import pytest

from node.config import load_config
from node.errors import ConfigError


def test_registration_is_closed_by_default(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).accounts.registration == "closed"


def test_registration_from_environment_and_file(tmp_path: Path) -> None:
    env = {"CIVITAS_ACCOUNTS_REGISTRATION": "invite"}
    assert load_config(tmp_path, environ=env).accounts.registration == "invite"
    (tmp_path / "config.toml").write_text('[accounts]\nregistration = "open"\n')
    assert load_config(tmp_path, environ={}).accounts.registration == "open"


def test_unknown_registration_mode_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registration"):
        load_config(tmp_path, environ={"CIVITAS_ACCOUNTS_REGISTRATION": "anyone"})
