"""Every error of the status API is JSON `{"error": code, "detail": text}`: unknown routes and
methods, refused requests, a database that does not answer, and bugs (500, with no trace)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from aiohttp import hdrs, web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# asyncpg raises OSError (and TimeoutError, one) for a server it cannot reach, InterfaceError for a
# connection lost under it, and PostgresError subclasses for what the server refused.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: turns aiohttp's plain-text errors and any exception into JSON."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kept = {k: v for k, v in e.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)}
        return error_response(e.status, _CODES.get(e.status, "http_error"), e.reason, kept)
    except DATABASE_ERRORS as e:
        log.warning("status API: %s %r: database unavailable: %r", request.method, request.path, e)
        return error_response(503, "database_unavailable", "the ledger's database does not answer; retry")
    except Exception:  # the edge of the API: logged whole, answered without it
        log.exception("status API: %s %r failed", request.method, request.path)
        return error_response(500, "internal_error", "the request failed; it is logged")
