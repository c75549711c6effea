"""Access rules for the browser viewer: a random token, a Host allow-list and an Origin check.

* Every request needs the token (``?token=...`` or ``Authorization: Bearer ...``): 401 without.
* The ``Host`` header must name the address the server is bound to (or ``localhost`` /
  ``127.0.0.1`` / ``[::1]`` on a loopback bind): this blocks DNS-rebinding pages whose own
  origin would otherwise look "same-origin". 403 otherwise.
* A request that carries ``Origin`` (every browser WebSocket handshake and cross-site fetch
  does) must come from one of those same ``http://host:port`` origins: 403 otherwise.
"""

from __future__ import annotations

import secrets

from aiohttp import web

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: bytes of randomness in a generated token (URL-safe base64, ~22 characters)
TOKEN_BYTES = 16


def new_token() -> str:
    """A fresh random token (``secrets.token_urlsafe``)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def allowed_hosts(bind_host: str, port: int) -> frozenset[str]:
    """``host:port`` values accepted in the ``Host`` header for a server bound to ``bind_host``."""
    names = {bind_host if ":" not in bind_host else f"[{bind_host}]"}
    if bind_host in ("127.0.0.1", "localhost", "::1"):
        names.update(LOOPBACK_NAMES)
    return frozenset(f"{n}:{port}" for n in names)


def request_token(request: web.Request) -> str:
    """The token the request carries (query ``token`` or a Bearer header), ``""`` if none."""
    token = request.query.get("token", "")
    auth = request.headers.get("Authorization", "")
    if not token and auth.startswith("Bearer "):
        token = auth[len("Bearer "):]
    return token


def check_request(request: web.Request, token: str, hosts: frozenset[str]) -> None:
    """Raise the HTTP error a request deserves, or return when it may proceed.

    Raises:
        aiohttp.web.HTTPForbidden: wrong ``Host`` or a foreign ``Origin`` (403).
        aiohttp.web.HTTPUnauthorized: missing or wrong token (401).
    """
    if request.host not in hosts:
        raise web.HTTPForbidden(text=f"host {request.host!r} not allowed\n")
    origin = request.headers.get("Origin")
    if origin is not None and origin not in {f"http://{h}" for h in hosts}:
        raise web.HTTPForbidden(text=f"origin {origin!r} not allowed\n")
    if not secrets.compare_digest(request_token(request).encode(), token.encode()):
        raise web.HTTPUnauthorized(text="a valid token is required: open the URL that "
                                        "`sonoflow live --view web` printed\n")
