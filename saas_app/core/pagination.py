"""Keyset pagination: `limit` + opaque `cursor`, answered as `{"items", "next_cursor"}`."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Keyset:
    at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    after: Keyset | None


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps({"at": at.isoformat(), "id": str(row_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class _CursorBody(BaseModel):
    """What a cursor must decode to; anything else is the client's malformed input."""

    # strict: no number-as-timestamp, no number-as-UUID; extra="forbid": only what we encode.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    at: AwareDatetime  # a naive time cannot be compared with the UTC columns
    id: uuid.UUID


MALFORMED_CURSOR = [{"loc": ("query", "cursor"), "msg": "Malformed cursor", "type": "value_error"}]


def decode_cursor(cursor: str) -> Keyset:
    """Returns the position a cursor names, or raises a 422 that does not echo it.

    A cursor is opaque to clients but still client input (ASVS 5.1.3: validate all input):
    every way it can be malformed (encoding, JSON, types, naive or out-of-range time, bad
    UUID) is the same validation error, never a 500 from the database layer.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = _CursorBody.model_validate_json(base64.urlsafe_b64decode(padded.encode("ascii")))
        # In UTC here, so a time that only fits the year range in its own offset fails now.
        return Keyset(at=body.at.astimezone(UTC), id=body.id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError) as exc:
        # pydantic's ValidationError is a ValueError; its text (with the input) is dropped.
        raise RequestValidationError(MALFORMED_CURSOR) from exc


Limit = Annotated[int, Query(ge=1, le=200)]
# Opaque, base64url: only a `next_cursor` this API returned decodes (anything else is 422).
Cursor = Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$")]


def page_of(limit: int, cursor: str | None) -> PageParams:
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


async def page_params(limit: Limit = 50, cursor: Cursor = None) -> PageParams:
    return page_of(limit, cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def keyset_page(
    stmt: Select[Any],
    params: PageParams,
    at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    *,
    newest_first: bool = False,
) -> Select[Any]:
    """Orders by (at, id) and starts after the cursor; fetches one extra row to see a next page."""
    if params.after is not None:
        a = params.after
        if newest_first:
            stmt = stmt.where(or_(at < a.at, and_(at == a.at, row_id < a.id)))
        else:
            stmt = stmt.where(or_(at > a.at, and_(at == a.at, row_id > a.id)))
    order = (at.desc(), row_id.desc()) if newest_first else (at.asc(), row_id.asc())
    return stmt.order_by(*order).limit(params.limit + 1)


def split_page(rows: list[Any], params: PageParams) -> tuple[list[Any], str | None]:
    """Returns the page's rows and the cursor of the next page (None on the last one)."""
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    last = rows[-1]
    return rows, encode_cursor(last.created_at, last.id)
