"""The service's guard, one middleware for every request: the token (when set; required to
bind beyond the loopback), the Host header (a page of another site cannot reach a loopback
service by DNS rebinding), cross-site writes refused, and headers that keep the pages inert
(a Content-Security-Policy allowing nothing but this origin's files)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .options import LOOPBACK_NAMES

TOKEN_COOKIE = "vecstore_token"
CSRF_HEADER = "x-vecstore"  # a header no cross-site form or simple request can carry
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Guard:
    """``await guard(request, call_next)``: the response, or the refusal (401, 403, 421)."""

    def __init__(self, token: str | None, port: int) -> None:
        self.token = token
        self.hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES} | set(LOOPBACK_NAMES)

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return _secure(refused)
        if self.token and request.query_params.get("token") and request.method == "GET":
            return _secure(self._token_cookie(request))
        return _secure(await call_next(request))

    def _refusal(self, request: Request) -> Response | None:
        if self.token is None and request.headers.get("host", "") not in self.hosts:
            return _error(421, "this service answers on the loopback only (Host header)")
        if self.token is not None and not self._has_token(request):
            return _error(401, "a token is required: open the address `vecstore serve` printed")
        if request.headers.get("sec-fetch-site", "none") not in ("same-origin", "none"):
            return _error(403, "cross-site request refused")
        if request.method not in SAFE_METHODS and not _same_origin(request):
            return _error(403, "cross-site request refused (send the X-Vecstore header)")
        return None

    def _has_token(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        given = [
            auth[7:] if auth.lower().startswith("bearer ") else "",
            request.cookies.get(TOKEN_COOKIE, ""),
            request.query_params.get("token", "") if request.method == "GET" else "",
        ]
        assert self.token is not None
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g)

    def _token_cookie(self, request: Request) -> Response:
        """The token of a link, kept as a cookie (HttpOnly, SameSite=Strict), the link
        itself left for the same address without it (out of the history and the logs)."""
        rest = request.url.remove_query_params("token")
        to = rest.path + (f"?{rest.query}" if rest.query else "")
        resp = RedirectResponse(to, status_code=303)
        resp.set_cookie(TOKEN_COOKIE, self.token or "", httponly=True, samesite="strict")
        return resp


def _same_origin(request: Request) -> bool:
    """A write must carry the X-Vecstore header (a cross-site page cannot send it without a
    CORS preflight, which this service never grants) and, when the browser says where it
    comes from, come from this very origin. (Any request a browser marks as sent from
    another site, Sec-Fetch-Site, is refused before: reads too.)"""
    if CSRF_HEADER not in request.headers:
        return False
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    return origin is None or origin.split("://", 1)[-1] == host


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


def _secure(resp: Response) -> Response:
    for k, v in HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp
