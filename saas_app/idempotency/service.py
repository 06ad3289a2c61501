"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header) for creating requests.

A client that got no answer (a timeout, a dropped connection) cannot tell whether its
POST created something. Sent with the same `Idempotency-Key`, the retry gets the first
answer again, once that answer exists, instead of creating a second time.

- The answer is stored in the request's own transaction, beside what it created: a crash
  between the commit and the answer leaves both, and the retry gets the answer.
- Keys belong to a caller (a user or an API key) in a tenant, and live 24 h.
- The same key with another request (method, path or body) is 422; a request with the
  same key still running elsewhere is 409 (PostgreSQL: a transaction-scoped advisory lock
  on the key; SQLite's writers run one at a time, so a retry waits for the first and
  then gets its answer).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from saas_app.core.errors import DomainError
from saas_app.core.http import json_answer
from saas_app.guards import Principal
from saas_app.idempotency.models import IdempotentAnswer
from saas_app.runtime import now_of, runtime_of
from saas_app.security.crypto import SecretBox

LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255
REPLAYED = "Idempotent-Replayed"  # on a stored answer sent again (as Stripe's API does)
TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:lock)")


class BadIdempotencyKey(DomainError):
    status = 400
    code = "invalid_idempotency_key"


class KeyReused(DomainError):
    """Draft §2.7: the key was used with another request."""

    status = 422
    code = "idempotency_key_reused"


class KeyInFlight(DomainError):
    """Draft §2.7: a request with this key is still being processed."""

    status = 409
    code = "idempotency_key_in_flight"

    def __init__(self) -> None:
        super().__init__("A request with this Idempotency-Key is still being processed; retry later.")
        self.headers["Retry-After"] = "1"


class Once:
    """One creating request's Idempotency-Key: `replay` before doing the work, `answer`
    after it, both in the request's transaction."""

    def __init__(self, request: Request, key: str | None) -> None:
        self._request = request
        self.key = _key_of(key)
        self._hash = ""
        self._tenant_id: uuid.UUID | None = None
        self._principal = ""
        self.replay_headers: dict[str, str] = {}  # what the route adds to its answers

    async def replay(self, session: AsyncSession, caller: Principal) -> Response | None:
        """The stored answer to this key, if any; raises if the key cannot be used."""
        if self.key is None:
            return None
        tenant_id = self._tenant_id = caller.tenant_id
        principal = self._principal = f"{caller.ref.type}:{caller.ref.id}"
        self._hash = await _request_hash(self._request)
        if runtime_of(self._request).engine.dialect.name == "postgresql":
            lock = _lock_id(str(tenant_id), principal, self.key)
            if not (await session.execute(TRY_LOCK, {"lock": lock})).scalar_one():
                raise KeyInFlight()
        stored = await session.get(IdempotentAnswer, (tenant_id, principal, self.key))
        if stored is None:
            return None
        if stored.expires_at <= now_of(self._request):
            await session.delete(stored)
            await session.flush()
            return None
        if stored.request_hash != self._hash:
            raise KeyReused("This Idempotency-Key was used with another request.")
        body = _box(self._request).decrypt(stored.body).encode()
        return json_answer(body, stored.status, {**self.replay_headers, REPLAYED: "true"})

    async def answer(
        self, session: AsyncSession, status: int, model: BaseModel, headers: dict[str, str] | None = None
    ) -> Response:
        """The answer, stored under the key (if the request has one) in this transaction."""
        body = model.model_dump_json().encode()
        if self.key is not None:
            assert self._tenant_id is not None, "replay() comes first"
            now = now_of(self._request)
            session.add(
                IdempotentAnswer(
                    tenant_id=self._tenant_id,
                    principal=self._principal,
                    key=self.key,
                    request_hash=self._hash,
                    status=status,
                    body=_box(self._request).encrypt(body.decode()),
                    created_at=now,
                    expires_at=now + LIFETIME,
                )
            )
            await session.flush()
        return json_answer(body, status, headers)


async def once(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Makes a retry safe: the same key with the same request within 24 h gets"
            " the first answer again (with `Idempotent-Replayed: true`) instead of creating twice."
            " The same key with another request is 422 `idempotency_key_reused`.",
            # Documented, and checked by _key_of (400 invalid_idempotency_key), not by FastAPI's
            # validation: a malformed key is a bad request header, not an invalid body field.
            json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x20-\\x7E]+$"},
        ),
    ] = None,
) -> Once:
    return Once(request, idempotency_key)


OnceDep = Annotated[Once, Depends(once)]


def _key_of(value: str | None) -> str | None:
    """The key: an sf-string (`"..."`, draft §2.1), or the same bare, as many clients send."""
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_LENGTH or not all(0x20 <= ord(c) <= 0x7E for c in key):
        raise BadIdempotencyKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
    return key


async def _request_hash(request: Request) -> str:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), await request.body()):
        digest.update(struct.pack(">Q", len(part)) + part)
    return digest.hexdigest()


def _lock_id(*parts: str) -> int:
    """A signed 64-bit advisory lock id for the key."""
    raw = hashlib.sha256("\0".join(("idempotency", *parts)).encode()).digest()
    return int(struct.unpack(">q", raw[:8])[0])


def _box(request: Request) -> SecretBox:
    box: SecretBox = runtime_of(request).box
    return box
