"""Structured logs: one line per request, never a body, query string or credential."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.types import Scope

from saas_app.core.config import Settings

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
access_logger = logging.getLogger("saas_app.access")
# color_message: uvicorn's ANSI-coloured copy of its message, passed as an extra.
RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in RESERVED})
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["trace"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in RESERVED)
        base = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} {extra}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(settings: Settings) -> None:
    """Installs one stderr handler on the `saas_app` logger tree."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.LOG_FORMAT == "json" else TextFormatter())
    root = logging.getLogger("saas_app")
    root.handlers[:] = [handler]
    root.setLevel(settings.LOG_LEVEL.upper())
    root.propagate = False


def server_log_config(settings: Settings) -> dict[str, Any] | None:
    """A logging.config.dictConfig for the server's own loggers (uvicorn's, Alembic's) in
    the app's format when it is JSON, so that every line the process writes is one JSON
    object. None for text: uvicorn and Alembic keep their own layouts."""
    if settings.LOG_FORMAT != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "saas_app.core.logging.JSONFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "alembic": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def log_request(scope: Scope, status: int, started: float, request_id: str) -> None:
    """One access-log line: method, route template (never the raw path or query), status."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    route = scope.get("route")
    access_logger.info(
        "request",
        extra={
            "method": scope["method"],
            "path": getattr(route, "path", "<unmatched>"),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "tenant": scope.get("path_params", {}).get("tenant"),
            "request_id": request_id,
        },
    )


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is safe to echo, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if REQUEST_ID.match(candidate):
                return str(candidate)
            break
    return uuid.uuid4().hex


class Repeats:
    """Logs a recurring message at most once per `interval` seconds per key; the next line
    it lets through says how many it held back. An outage fails every request the same
    way: a line per request would bury everything else in the log (thousands a second)."""

    MAX_KEYS = 1000

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last logged at, held back since)

    def log(self, logger: logging.Logger, level: int, key: str, message: str, *args: object) -> bool:
        """Logs `message % args` unless `key` was logged less than `interval` ago; True if it did."""
        now = time.monotonic()
        last, held = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, held, now - last)
        logger.log(level, message, *args)
        if len(self._seen) >= self.MAX_KEYS and key not in self._seen:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


# An outage fails requests by the thousand, all alike: one log line per kind per interval.
REPEATS = Repeats(interval=10.0)
