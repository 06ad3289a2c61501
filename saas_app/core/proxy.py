"""Which client a request comes from: `FORWARDED_ALLOW_IPS`, applied by the app itself.

The per-IP limits and audit events read the client address (ASVS 5.0 V4.1.3: a header the
client controls must not choose it). The app wraps itself in uvicorn's proxy-headers
middleware with the operator's list, so `python -m saas_app serve`, plain `uvicorn` and any
other ASGI server apply the same rule. uvicorn's own copy of that middleware, on by default
and trusting 127.0.0.1, runs before the app and overwrites the socket peer in the ASGI
scope: the app cannot undo it, so it refuses to start under such a uvicorn instead."""

from __future__ import annotations

import sys
from types import FrameType

from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from saas_app.core.config import Settings


def install_proxy_headers(app: FastAPI, settings: Settings) -> None:
    """Outermost middleware: everything inside sees the client the trusted proxy names.
    An empty list trusts nobody (the TCP peer is the client)."""
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.FORWARDED_ALLOW_IPS))


def refuse_foreign_proxy_trust(settings: Settings) -> None:
    """Called in the lifespan's start-up: stops the service when the uvicorn running it
    trusts X-Forwarded-For from proxies other than `FORWARDED_ALLOW_IPS` (its default,
    127.0.0.1 and ::1, when `--no-proxy-headers` is not given)."""
    config = _running_uvicorn_config()
    if config is None or not config.proxy_headers:
        return
    trusted = _entries(config.forwarded_allow_ips)
    if trusted and trusted != set(settings.FORWARDED_ALLOW_IPS):
        raise RuntimeError(
            f"uvicorn trusts X-Forwarded-For from {sorted(trusted)} but FORWARDED_ALLOW_IPS is "
            f"{settings.FORWARDED_ALLOW_IPS}: any client there could choose its IP for the "
            "per-IP limits. Run uvicorn with --no-proxy-headers (the app applies "
            "FORWARDED_ALLOW_IPS itself), or use `python -m saas_app serve`."
        )


def _entries(value: list[str] | str) -> set[str]:
    items = value.split(",") if isinstance(value, str) else value
    return {item.strip() for item in items if item.strip()}


def _running_uvicorn_config() -> Config | None:
    """The uvicorn Config whose lifespan is starting this app, found up the call chain
    (uvicorn's LifespanOn holds it as `self.config`); None under any other server."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        config = getattr(frame.f_locals.get("self"), "config", None)
        if isinstance(config, Config):
            return config
        frame = frame.f_back
    return None
