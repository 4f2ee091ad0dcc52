"""Where broker passwords come from, and what a bad source says."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import BrokerConfig, ConfigError
from agent.connection import password


def test_password_comes_from_the_first_line_of_its_file(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\nignored\n")
    broker = BrokerConfig(username="u", password_file=secret)
    assert password(broker) == "hunter2"


def test_password_comes_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGE_TEST_PW", "from-env")
    assert password(BrokerConfig(username="u", password_env="EDGE_TEST_PW")) == "from-env"
    monkeypatch.delenv("EDGE_TEST_PW")
    with pytest.raises(ConfigError, match="EDGE_TEST_PW unset"):
        password(BrokerConfig(username="u", password_env="EDGE_TEST_PW"))


def test_unreadable_or_empty_password_files_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        password(BrokerConfig(username="u", password_file=tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        password(BrokerConfig(username="u", password_file=empty))


def test_a_password_needs_a_user_and_one_source(tmp_path: Path):
    with pytest.raises(ValueError, match="needs a username"):
        BrokerConfig(password_env="X")
    with pytest.raises(ValueError, match="not both"):
        BrokerConfig(username="u", password_env="X", password_file=tmp_path / "pw")
