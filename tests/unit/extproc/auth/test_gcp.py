"""Service-account tokens: the JWT assertion, key files, and TokenSource caching, early refresh,
shared refreshes and failures — with a fake fetch and a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from extproc.auth import gcp

EMAIL = "gateway@demo-project.iam.gserviceaccount.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()
INFO = {"type": "service_account", "project_id": "demo-project", "private_key_id": "kid-1", "private_key": PEM,
        "client_email": EMAIL, "token_uri": "https://oauth2.googleapis.com/token"}
SA = gcp.ServiceAccount.from_info(INFO)
NOW = 1_767_225_600.0


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode(jwt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, claims, signature = jwt.split(".")
    KEY.public_key().verify(_b64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.loads(_b64(head)), json.loads(_b64(claims))


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Answers token requests from a script: each entry is (status, json) or an exception."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, form: dict[str, str]) -> tuple[int, Any]:
        self.calls.append((url, form))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(token: str, expires_in: int = 3600) -> tuple[int, dict[str, Any]]:
    return 200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}


def test_assertion_verifies_and_has_the_claims() -> None:
    header, claims = _decode(gcp.build_assertion(SA, NOW + 0.7))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert claims == {"iss": EMAIL, "scope": gcp.CLOUD_PLATFORM_SCOPE, "aud": "https://oauth2.googleapis.com/token",
                      "iat": int(NOW), "exp": int(NOW) + 3600}


def test_assertion_scope_and_audience_are_chosen() -> None:
    _, claims = _decode(gcp.build_assertion(SA, NOW, scope="s1", token_uri="http://127.0.0.1:9/token"))
    assert (claims["scope"], claims["aud"]) == ("s1", "http://127.0.0.1:9/token")


def test_assertion_is_deterministic() -> None:
    assert gcp.build_assertion(SA, NOW) == gcp.build_assertion(SA, NOW)


def test_key_file_loads_and_repr_hides_the_key(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(INFO))
    account = gcp.ServiceAccount.from_file(str(path))
    assert (account.client_email, account.private_key_id, account.token_uri) == (
        EMAIL, "kid-1", "https://oauth2.googleapis.com/token")
    assert "PRIVATE" not in repr(account) and "private_key=" not in repr(account)


def test_key_file_without_token_uri_uses_google() -> None:
    info = {k: v for k, v in INFO.items() if k != "token_uri"}
    assert gcp.ServiceAccount.from_info(info).token_uri == gcp.DEFAULT_TOKEN_URI


@pytest.mark.parametrize(("change", "error"), [
    ({"client_email": None}, ValueError),
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}, ValueError),
    ({"type": "authorized_user"}, ValueError),
])
def test_bad_key_files_are_refused(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        gcp.ServiceAccount.from_info({**INFO, **change})


def test_missing_field_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        gcp.ServiceAccount.from_info({k: v for k, v in INFO.items() if k != "private_key_id"})
    with pytest.raises(OSError):
        gcp.ServiceAccount.from_file(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        gcp.ServiceAccount.from_file(str(tmp_path / "bad.json"))


def test_token_is_fetched_once_and_cached() -> None:
    fetch, clock = FakeFetch(ok("t1")), Clock()
    source = gcp.TokenSource(SA, fetch=fetch, clock=clock)

    async def run() -> list[str]:
        first = await source.token()
        clock.now += 3600 - 301
        return [first, await source.token()]

    assert asyncio.run(run()) == ["t1", "t1"]
    assert len(fetch.calls) == 1
    url, form = fetch.calls[0]
    assert url == "https://oauth2.googleapis.com/token"
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert _decode(form["assertion"])[1]["iat"] == int(NOW)


def test_token_is_refreshed_five_minutes_before_expiry() -> None:
    fetch, clock = FakeFetch(ok("t1", 1000), ok("t2")), Clock()
    source = gcp.TokenSource(SA, fetch=fetch, clock=clock)

    async def run() -> list[str]:
        tokens = [await source.token()]
        clock.now += 1000 - 300
        tokens.append(await source.token())
        tokens.append(await source.token())
        return tokens

    assert asyncio.run(run()) == ["t1", "t2", "t2"]
    assert len(fetch.calls) == 2
    assert _decode(fetch.calls[1][1]["assertion"])[1]["iat"] == int(NOW) + 700


def test_concurrent_callers_share_one_refresh() -> None:
    fetch = FakeFetch(ok("t1"))
    source = gcp.TokenSource(SA, fetch=fetch, clock=Clock())

    async def run() -> list[str]:
        fetch.gate = asyncio.Event()
        waiting = [asyncio.create_task(source.token()) for _ in range(20)]
        while not fetch.calls:
            await asyncio.sleep(0)
        fetch.gate.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(run()) == ["t1"] * 20
    assert len(fetch.calls) == 1


def test_token_uri_override_wins() -> None:
    fetch = FakeFetch(ok("t1"))
    source = gcp.TokenSource(SA, "http://127.0.0.1:8999/token", fetch=fetch, clock=Clock())
    asyncio.run(source.token())
    url, form = fetch.calls[0]
    assert url == "http://127.0.0.1:8999/token"
    assert _decode(form["assertion"])[1]["aud"] == "http://127.0.0.1:8999/token"


@pytest.mark.parametrize("answer", [
    (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
    (500, "<html>oops</html>"),
    (200, {"token_type": "Bearer"}),
    (200, {"access_token": "t", "expires_in": "soon"}),
    (200, {"access_token": "t"}),
    OSError("connection refused"),
])
def test_failed_refresh_without_a_token_raises_a_clean_error(answer: Any) -> None:
    fetch = FakeFetch(answer)
    source = gcp.TokenSource(SA, fetch=fetch, clock=Clock())
    with pytest.raises(gcp.TokenError) as info:
        asyncio.run(source.token())
    text = str(info.value)
    assert EMAIL in text and "oauth2.googleapis.com/token" in text
    assert fetch.calls[0][1]["assertion"] not in text and "PRIVATE" not in text and info.value.__cause__ is None


def test_error_text_names_the_oauth_error() -> None:
    source = gcp.TokenSource(SA, fetch=FakeFetch((400, {"error": "invalid_grant", "error_description": "Bad"})),
                             clock=Clock())
    with pytest.raises(gcp.TokenError, match=r"answered 400 \(invalid_grant: Bad\)"):
        asyncio.run(source.token())


def test_failed_refresh_keeps_the_old_token_while_valid() -> None:
    fetch = FakeFetch(ok("t1", 1000), (503, None), ok("t2"))
    clock = Clock()
    source = gcp.TokenSource(SA, fetch=fetch, clock=clock)

    async def run() -> list[str]:
        tokens = [await source.token()]
        clock.now += 800
        tokens.append(await source.token())
        clock.now += 5
        tokens.append(await source.token())
        clock.now += 10
        tokens.append(await source.token())
        return tokens

    assert asyncio.run(run()) == ["t1", "t1", "t1", "t2"]
    assert len(fetch.calls) == 3


def test_failed_refresh_after_expiry_raises() -> None:
    fetch = FakeFetch(ok("t1", 1000), (503, None))
    clock = Clock()
    source = gcp.TokenSource(SA, fetch=fetch, clock=clock)

    async def run() -> None:
        await source.token()
        clock.now += 1000
        await source.token()

    with pytest.raises(gcp.TokenError, match="answered 503"):
        asyncio.run(run())


def test_default_fetch_posts_a_form() -> None:
    """The aiohttp fetch against a local token endpoint on port 0."""
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["content_type"] = request.content_type
        seen["form"] = dict(await request.post())
        return web.json_response({"access_token": "live", "expires_in": 3599, "token_type": "Bearer"})

    async def run() -> str:
        app = web.Application()
        app.router.add_post("/token", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            return await gcp.TokenSource(SA, f"http://127.0.0.1:{port}/token").token()
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == "live"
    assert seen["content_type"] == "application/x-www-form-urlencoded"
    assert seen["form"]["grant_type"] == gcp.JWT_BEARER_GRANT
    assert _decode(seen["form"]["assertion"])[1]["iss"] == EMAIL
