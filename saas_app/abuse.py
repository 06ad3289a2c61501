"""Per-client-IP abuse limits as route dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from saas_app.runtime import ClientIPDep, RuntimeDep


def per_ip_limit(bucket: str, setting: str) -> Callable[..., Awaitable[None]]:
    """A dependency taking one slot of `bucket` for the client IP (429 when none is left)."""

    async def dependency(runtime: RuntimeDep, ip: ClientIPDep) -> None:
        await runtime.limiter.enforce(bucket, getattr(runtime.settings, setting), ip)

    return dependency
