"""The options several commands share mean the same everywhere; one check for PREFECT_API_URL."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli.main import _parser
from cli.options import need_api
from dropship.errors import ConfigError

WITH_MANIFEST = [
    ["release", "v1.0.0"],
    ["blocks"],
    ["check"],
    ["webhook"],
    ["deployments", "apply"],
    ["promote", "r1", "--as", "v1.0.0"],
    ["rollback"],
    ["image", "build"],
]


@pytest.mark.parametrize("argv", WITH_MANIFEST, ids=lambda argv: " ".join(argv[:2]))
def test_manifest_is_one_option(argv: list[str]) -> None:
    parser = _parser()
    assert parser.parse_args(argv).manifest == Path("dropship.toml")
    assert parser.parse_args([*argv, "--manifest", "x/p.toml"]).manifest == Path("x/p.toml")


@pytest.mark.parametrize("argv", [["release"], ["reap"], ["promote", "r1", "--as", "v1"], ["rollback"]])
def test_state_workdir_defaults_to_dropship_home(argv: list[str]) -> None:
    assert _parser().parse_args(argv).workdir is None  # tasks.settings.default_workdir: $DROPSHIP_HOME


@pytest.mark.parametrize("argv", [["demo"], ["ui"]])
def test_demo_workdir_is_the_demo_folder(argv: list[str]) -> None:
    assert _parser().parse_args(argv).workdir == Path("demo")


@pytest.mark.parametrize("argv", [["release"], ["check"], ["blocks"], ["demo"], ["reap"], ["deployments", "apply"]])
def test_provider_takes_only_known_providers(argv: list[str]) -> None:
    assert _parser().parse_args([*argv, "--provider", "digitalocean"]).provider == "digitalocean"
    with pytest.raises(SystemExit):
        _parser().parse_args([*argv, "--provider", "aws"])


def test_need_api_without_the_variable_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ConfigError, match=r"^set PREFECT_API_URL to the Prefect server: the reason \(`dropship ui"):
        need_api("the reason")


def test_need_api_reachable_refuses_a_server_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    assert need_api("why") == f"http://127.0.0.1:{port}/api"  # set is enough without `reachable`
    with pytest.raises(ConfigError, match=f"the Prefect server at http://127.0.0.1:{port}/api can't be reached"):
        need_api("why", reachable=True)
