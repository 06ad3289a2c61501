"""HTTP hardening applied to every response: size limits and security headers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas_app.core.errors import NO_STORE, is_oauth_endpoint, oauth_error_body
from saas_app.core.logging import log_request, request_id_of

# PostgreSQL cannot store U+0000 in text (SQLite can): input carrying it is refused everywhere
# (422, or `invalid_request` on the OAuth endpoints) rather than failing in the database.
NUL = "\x00"
NO_NUL = r"^[^\x00]*$"  # `pattern=` for text query parameters


def has_nul(value: object) -> bool:
    """Whether a text value, or any text in a list of them, contains NUL."""
    if isinstance(value, str):
        return NUL in value
    return isinstance(value, list) and any(has_nul(item) for item in value)


def json_answer(body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON body already rendered (from a cache, or a stored answer): FastAPI neither
    validates nor serialises it again. The route declares `response_model=` for the
    documentation."""
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def user_agent(request: Request) -> str | None:
    """The request's User-Agent as kept with a session (it is informational: NULs are dropped)."""
    value = request.headers.get("user-agent")
    return None if value is None else value.replace(NUL, "")


SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class HttpEdge:
    """What every HTTP request passes through, as one pure-ASGI layer (each layer costs a
    call and a wrapped `send` per request, a measurable share of a cached answer):

    - refuses oversized input before anything parses it: 431 for a header section over
      `max_header_bytes` (RFC 6585 §5), 414 for a longer request target (RFC 9110
      §15.5.15), 413 for a body over `max_body_bytes` (RFC 9110 §15.5.14);
    - echoes or assigns `X-Request-ID` and writes one access-log line;
    - adds `nosniff`, `Referrer-Policy` and, unless a route chose its own caching,
      `Cache-Control: no-store`, so nothing carrying a credential or personal data
      lands in a shared cache.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, max_url_bytes: int
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_edge_headers(message.get("headers", []), request_id)
            await send(message)

        try:
            refusal = self._refuse_request_head(scope)
            if refusal is not None:
                await _refuse(send_with_headers, refusal, scope)
                return
            await self._pass_on(scope, receive, send_with_headers)
        finally:
            log_request(scope, status, started, request_id)

    def _refuse_request_head(self, scope: Scope) -> Refusal | None:
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            return HEADERS_TOO_LARGE
        if len(scope.get("raw_path") or b"") + len(scope["query_string"]) > self.max_url_bytes:
            return URI_TOO_LONG
        return None

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked:
            # The server delivers exactly the declared length: checking it is enough.
            if not declared.isdigit() or int(declared) > self.max_body_bytes:
                await _refuse(send, _too_large(self.max_body_bytes), scope)
                return
            await self.app(scope, receive, send)
        elif chunked:
            await self._pass_on_chunked(scope, receive, send)
        else:  # no body (RFC 9112 §6.3: neither header means a zero-length body)
            await self.app(scope, receive, send)

    async def _pass_on_chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A chunked body is counted as it arrives, then replayed to the app."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await _refuse(send, _too_large(self.max_body_bytes), scope)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _with_edge_headers(headers: Iterable[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    out = list(headers)
    names = {name.lower() for name, _ in out}
    out += [h for h in SECURITY_HEADERS if h[0] not in names]
    if b"cache-control" not in names:
        out.append((b"cache-control", b"no-store"))
    out.append((b"x-request-id", request_id.encode()))
    return out


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    title: str
    detail: str
    code: str


HEADERS_TOO_LARGE = Refusal(
    431, "Request Header Fields Too Large", "The request's headers are too large.", "headers_too_large"
)
URI_TOO_LONG = Refusal(414, "URI Too Long", "The request target is too long.", "uri_too_long")


def _too_large(limit: int) -> Refusal:
    return Refusal(413, "Content Too Large", f"The request body exceeds {limit} bytes.", "payload_too_large")


async def _refuse(send: Send, refusal: Refusal, scope: Scope) -> None:
    """A problem+json answer (RFC 6749 §5.2 form on the OAuth endpoints, see
    core/errors.py) that closes the connection: the rest of the request is unread."""
    media_type = b"application/problem+json"
    document: dict[str, object] = {
        "type": "about:blank",
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
        "code": refusal.code,
    }
    extra: list[tuple[bytes, bytes]] = []
    if is_oauth_endpoint(scope.get("path", "")):
        media_type = b"application/json"
        document = dict(oauth_error_body(refusal.status, refusal.detail))
        extra = [(name.lower().encode(), value.encode()) for name, value in NO_STORE.items()]
    body = json.dumps(document).encode()
    headers = [
        (b"content-type", media_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
