"""Bearer tokens of the status API: which tokens it accepts, and the middleware that checks them."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from coordinator.api.json_errors import error_response
from schemas.errors import ConfigurationError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# RFC 6750's b64token, bounded: what `secrets.token_urlsafe` makes, and nothing a comma-separated
# variable or a header could split or mangle.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,1024}=*")
_MAX_PRESENTED = 1100  # longer than any token we accept: refused without hashing it
_CHALLENGE = 'Bearer realm="ledger"'


@dataclass(frozen=True, repr=False)
class ApiTokens:
    """The tokens the status API accepts, any one of them: several let a token be rotated (add the
    new one, move the clients, remove the old one) without downtime."""

    tokens: tuple[str, ...]
    """From `--token` or LEDGER_API_TOKENS (comma-separated); at least one, 16-1024 characters of
    A-Z a-z 0-9 - . _ ~ + / (trailing = allowed)."""
    _digests: tuple[bytes, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ConfigurationError(
                "the status API serves no one without a token: set LEDGER_API_TOKENS or --token"
            )
        for n, token in enumerate(self.tokens, 1):
            if not _TOKEN.fullmatch(token):
                raise ConfigurationError(
                    f"API token {n} of {len(self.tokens)}: not 16-1024 characters of A-Z a-z 0-9 - . _ ~ + /"
                )
        object.__setattr__(self, "_digests", tuple(_digest(t.encode()) for t in self.tokens))

    def accepts(self, presented: bytes) -> bool:
        """Whether `presented` is one of the tokens. Compares against every token, in constant time:
        equal-length digests, so neither where a guess goes wrong nor the tokens' lengths show."""
        if len(presented) > _MAX_PRESENTED:
            return False
        digest = _digest(presented)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found

    def __repr__(self) -> str:
        return f"ApiTokens(<{len(self.tokens)} tokens>)"


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _presented(request: web.Request) -> bytes | None:
    """The token of the request's one `Authorization: Bearer <token>` header, or None."""
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(values) != 1:
        return None
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    # aiohttp decodes header bytes with surrogateescape; this gives back exactly what was sent.
    return token.encode("utf-8", "surrogateescape")


def bearer_auth(tokens: ApiTokens, open_handlers: Collection[Handler]) -> Middleware:
    """Middleware: a request reaches its handler only with a valid token, unless the route's handler
    is open (health checks). Unknown routes are refused too, so they reveal nothing."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.handler in open_handlers:
            return await handler(request)
        presented = _presented(request)
        if presented is None:
            return error_response(
                401, "unauthorized", "send Authorization: Bearer <token>", {hdrs.WWW_AUTHENTICATE: _CHALLENGE}
            )
        if not tokens.accepts(presented):
            challenge = f'{_CHALLENGE}, error="invalid_token"'
            return error_response(
                401, "unauthorized", "the token is not valid", {hdrs.WWW_AUTHENTICATE: challenge}
            )
        return await handler(request)

    return check
