"""The status API's edge, without a database: bearer tokens, JSON for every error, bounded inputs."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.auth import ApiTokens
from coordinator.api.status import build_app
from coordinator.cli import api_run
from infra.config import LedgerConfig
from schemas.errors import ConfigurationError
from schemas.partitioning import PartitionMap

TOKEN = "right-token-0123456789abcdef"
NEXT_TOKEN = "next-token-0123456789abcdefgh"  # a second token is how one is rotated without downtime
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


class FakePool:
    """Answers like an empty coordinator schema, or raises `fails` on every query."""

    def __init__(self, fails: BaseException | None = None) -> None:
        self.fails = fails

    async def fetchval(self, *args: Any) -> int:
        if self.fails:
            raise self.fails
        return 1

    async def fetch(self, *args: Any) -> list[Any]:
        if self.fails:
            raise self.fails
        return []

    async def close(self) -> None:
        return None


def _client(pool: FakePool | None = None) -> TestClient[Any, Any]:
    config = LedgerConfig("postgresql://unused/ledger", "unused:9092")
    pools: dict[Any, Any] = {"coordinator": pool or FakePool()}
    app = build_app(config, ApiTokens((TOKEN, NEXT_TOKEN)), pools, PartitionMap.initial(2))
    return TestClient(TestServer(app))


async def _json_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"] == error, body
    return body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/transfers?state=completed"),
        ("GET", "/transfers/00000000-0000-0000-0000-000000000000"),
        ("GET", "/accounts/alice"),
        ("GET", "/no-such-route"),  # an unknown route tells nothing before the token is checked
        ("POST", "/transfers"),
        ("POST", "/healthz"),
    ],
)
async def test_without_a_token_every_route_but_healthz_is_401_json(method: str, path: str) -> None:
    async with _client() as http:
        response = await http.request(method, path)
        await _json_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN[:-1]}",  # a prefix
        f"Bearer {TOKEN}x",  # an extension
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",  # another scheme
        f"Bearer  {TOKEN}",  # not the token68 form
        "Bearer ",
        "Bearer",
        TOKEN,
        "Bearer " + "t" * 3000,  # under the header bound, over any token
    ],
)
async def test_a_wrong_token_is_401_json(authorization: str) -> None:
    async with _client() as http:
        response = await http.get("/transfers?state=completed", headers={"Authorization": authorization})
        await _json_error(response, 401, "unauthorized")
        assert "Bearer" in response.headers["WWW-Authenticate"]


async def test_a_non_ascii_authorization_header_is_401_not_a_crash() -> None:
    async with _client() as http:
        response = await http.get(
            "/transfers", headers={"Authorization": "Bearer t\u00f6ken-\u20ac-0123456789"}
        )
        await _json_error(response, 401, "unauthorized")


async def test_two_authorization_headers_are_refused() -> None:
    async with _client() as http:
        headers = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong-0123456789abcdef")]
        response = await http.get("/transfers", headers=headers)
        await _json_error(response, 401, "unauthorized")


@pytest.mark.parametrize("token", [TOKEN, NEXT_TOKEN])
async def test_any_configured_token_is_served(token: str) -> None:
    async with _client() as http:
        for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive (RFC 7235)
            response = await http.get(
                "/transfers?state=completed", headers={"Authorization": f"{scheme} {token}"}
            )
            assert response.status == 200
            assert await response.json() == {"state": "completed", "transfers": []}


async def test_healthz_is_open() -> None:
    async with _client() as http:
        response = await http.get("/healthz")
        assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_unknown_routes_and_methods_get_json() -> None:
    async with _client() as http:
        await _json_error(await http.get("/no-such-route", headers=RIGHT), 404, "not_found")
        await _json_error(await http.get("/transfers/", headers=RIGHT), 404, "not_found")
        response = await http.post("/transfers", headers=RIGHT)
        await _json_error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["Allow"]
        await _json_error(await http.delete("/healthz"), 401, "unauthorized")


async def test_an_unexpected_error_is_500_json_without_its_details() -> None:
    async with _client(FakePool(RuntimeError("secret internal detail"))) as http:
        response = await http.get("/transfers", headers={**RIGHT, "Accept": "text/html"})
        body = await _json_error(response, 500, "internal_error")
        text = str(body)
        assert "secret" not in text
        assert "Traceback" not in text
        assert "RuntimeError" not in text


async def test_an_unreachable_database_is_503_and_healthz_does_not_leak_it() -> None:
    async with _client(FakePool(OSError("connect to 10.1.2.3:5432 refused"))) as http:
        await _json_error(await http.get("/transfers", headers=RIGHT), 503, "database_unavailable")
        body = await _json_error(await http.get("/healthz"), 503, "database_unavailable")
        assert "10.1.2.3" not in str(body)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/transfers?limit=%D9%A5", "invalid_limit"),  # an Arabic-Indic five: int() would take it
        ("/transfers?limit=%2B5", "invalid_limit"),
        ("/transfers?limit=%205", "invalid_limit"),
        ("/transfers?limit=0", "invalid_limit"),
        ("/transfers?limit=1001", "invalid_limit"),
        ("/transfers?limit=" + "9" * 3000, "invalid_limit"),
        ("/transfers?limti=5", "unknown_parameter"),
        ("/transfers/00000000-0000-0000-0000-000000000000?verbose=1", "unknown_parameter"),
        ("/accounts/" + "a" * 65, "invalid_account_id"),
        ("/transfers/" + "0" * 500, "invalid_transfer_id"),
    ],
)
async def test_inputs_are_bounded(path: str, error: str) -> None:
    async with _client() as http:
        await _json_error(await http.get(path, headers=RIGHT), 400, error)


async def test_oversized_requests_are_refused_before_any_handler() -> None:
    async with _client() as http:
        long_line = await http.get("/transfers?state=" + "x" * 9000, headers=RIGHT)
        assert long_line.status in (400, 414)
        big_header = await http.get("/transfers", headers={**RIGHT, "X-Padding": "x" * 9000})
        assert big_header.status in (400, 431)


def test_tokens_are_validated_and_never_shown() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_API_TOKENS"):
        ApiTokens(())
    for bad in (
        "short",
        "has space in it 0123456789",
        "has,comma,0123456789abc",
        "x" * 1025,
        "t\u00f6ken-0123456789ab",
    ):
        with pytest.raises(ConfigurationError):
            ApiTokens((bad,))
    tokens = ApiTokens((TOKEN, NEXT_TOKEN))
    assert TOKEN not in repr(tokens)
    assert TOKEN not in str(tokens)
    assert tokens.accepts(TOKEN.encode())
    assert not tokens.accepts(TOKEN.encode() + b"\x00")


def test_api_run_reads_tokens_from_options_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_API_TOKENS", f" {TOKEN}, {NEXT_TOKEN} ,")
    assert api_run.make_context("run", []).params["tokens"] == (TOKEN, NEXT_TOKEN)
    assert api_run.make_context("run", ["--token", NEXT_TOKEN]).params["tokens"] == (NEXT_TOKEN,)


def test_api_run_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_API_TOKENS", raising=False)
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://127.0.0.1:1/none")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    ctx = api_run.make_context("run", [])
    with pytest.raises(ConfigurationError, match="token"), ctx:
        api_run.invoke(ctx)
