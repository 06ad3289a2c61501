"""Liveness, readiness and the public signing keys."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from saas_app.core.conditional import NOT_MODIFIED, cacheable
from saas_app.core.errors import RETRY_UNAVAILABLE, problem
from saas_app.core.openapi import Problem
from saas_app.discovery import JWKS_MAX_AGE
from saas_app.runtime import RuntimeDep

router = APIRouter(tags=["platform"])
logger = logging.getLogger("saas_app.platform")
READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (touches nothing)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Problem, "description": "A dependency is down"}})
async def readyz(runtime: RuntimeDep) -> Response:
    """The database (and Redis, when configured) answer."""
    down = []
    if not await _answers(_database(runtime)):
        down.append("database")
    if runtime.settings.REDIS_URL and not await _answers(runtime.limiter.ping()):
        down.append("redis")
    if down:
        detail = f"Not ready: {', '.join(down)} unavailable."
        return problem(503, "not_ready", detail, headers=RETRY_UNAVAILABLE, down=down)
    return JSONResponse({"status": "ok"})


async def _database(runtime: RuntimeDep) -> bool:
    async with runtime.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


async def _answers(check: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(check, READY_TIMEOUT_SECONDS))
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return False


@router.get("/.well-known/jwks.json", responses=NOT_MODIFIED)
async def jwks(runtime: RuntimeDep, request: Request) -> Response:
    """The public keys that verify access tokens (empty under HS256)."""
    return cacheable(request, runtime.keys.public_jwks, JWKS_MAX_AGE)
