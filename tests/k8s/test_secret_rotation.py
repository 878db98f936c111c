"""A provider key in a mounted Secret (`api_key_file`) rotates without a restart: the kubelet's
update (a new timestamped directory, the `..data` symlink swapped) is picked up within
KEY_FILE_RECHECK_S, and a Secret that loses its key keeps the last one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from extproc.auth.credentials import KEY_FILE_RECHECK_S, ApiKeyFile, Missing, credential_for
from extproc.config.model import Provider
from tests.k8s.pod import atomic_write


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sent(cred: object) -> list[tuple[str, str]]:
    return asyncio.run(cred.headers("POST", "api.openai.com", "/v1/chat/completions", {}, b"{}"))  # type: ignore[attr-defined]


def test_a_rotated_secret_is_used_without_a_restart(tmp_path: Path) -> None:
    volume = tmp_path / "secret"
    atomic_write(volume, {"api-key": "sk-old\n"})
    cred = credential_for(Provider(name="openai", type="openai", endpoint="https://api.openai.com",
                                   api_key_file=str(volume / "api-key")))
    assert isinstance(cred, ApiKeyFile)
    clock = Clock()
    cred.clock, cred.checked_at = clock, clock.now
    assert sent(cred) == [("authorization", "Bearer sk-old")]
    atomic_write(volume, {"api-key": "sk-new"})
    clock.now += KEY_FILE_RECHECK_S / 2
    assert sent(cred) == [("authorization", "Bearer sk-old")]  # not checked yet
    clock.now += KEY_FILE_RECHECK_S
    assert sent(cred) == [("authorization", "Bearer sk-new")]


def test_a_secret_that_loses_its_key_keeps_the_last_one(tmp_path: Path) -> None:
    volume = tmp_path / "secret"
    atomic_write(volume, {"api-key": "sk-old"})
    clock = Clock()
    cred = ApiKeyFile.load("api-key", "", "azure", str(volume / "api-key"), clock)
    assert cred is not None
    atomic_write(volume, {"api-key": "  \n"})
    clock.now += KEY_FILE_RECHECK_S
    assert sent(cred) == [("api-key", "sk-old")]
    atomic_write(volume, {"api-key": "sk-third"})
    clock.now += KEY_FILE_RECHECK_S
    assert sent(cred) == [("api-key", "sk-third")]


def test_a_missing_key_file_is_reported_as_before(tmp_path: Path) -> None:
    cred = credential_for(Provider(name="openai", type="openai", endpoint="https://api.openai.com",
                                   api_key_file=str(tmp_path / "absent")))
    assert isinstance(cred, Missing) and str(tmp_path / "absent") in cred.reason
