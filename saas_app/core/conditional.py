"""Documents served from memory that clients and caches may keep: `Cache-Control`, a strong
`ETag` of the exact bytes, and 304 for a client that has them (RFC 9110 §13.1.2)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not Modified (If-None-Match)"}}


def cacheable(request: Request, document: Any, max_age: int) -> Response:
    """`document` as JSON with `Cache-Control` and a strong ETag; 304 when the client has it."""
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*`, or any listed tag equal to ours by weak comparison (a proxy
    that compresses may have marked our tag weak: `W/"..."`)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
