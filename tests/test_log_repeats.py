"""An outage fails every request alike; the log says so once per interval, with a count
(saas_app/core/logging.py, Repeats)."""

from __future__ import annotations

import logging

import pytest

from saas_app.core import logging as app_logging
from saas_app.core.logging import Repeats


def test_a_repeated_message_is_logged_once_per_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(app_logging.time, "monotonic", lambda: now[0])
    repeats = Repeats(interval=10.0)
    logger = logging.getLogger("test.repeats")
    with caplog.at_level(logging.ERROR, logger="test.repeats"):
        logged = [
            repeats.log(logger, logging.ERROR, "db:OSError", "database unavailable: %s", "OSError")
            for _ in range(500)
        ]
        assert logged.count(True) == 1
        assert [r.getMessage() for r in caplog.records] == ["database unavailable: OSError"]

        # Another kind is its own line; the first kind stays quiet within its interval.
        repeats.log(logger, logging.ERROR, "db:PoolTimeout", "database unavailable: %s", "PoolTimeout")
        now[0] += 9.9
        assert not repeats.log(logger, logging.ERROR, "db:OSError", "database unavailable: %s", "OSError")
        now[0] += 0.2
        assert repeats.log(logger, logging.ERROR, "db:OSError", "database unavailable: %s", "OSError")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == "database unavailable: PoolTimeout"
    assert messages[2] == "database unavailable: OSError (and 500 more like it in the last 10 s)"
    assert len(messages) == 3
