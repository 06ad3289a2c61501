"""Running the real server (`python -m saas_app serve`) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ROOT, TEST_JWT_SECRET
from tests.fake_github import FakeGitHub, serve_in_thread
from tests.github_helpers import CLIENT_ID, CLIENT_SECRET, REDIRECT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready in 30 s")


@contextmanager
def running_server(
    env: dict[str, str],
    log_path: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    uvicorn_args: list[str] | None = None,
) -> Iterator[tuple[str, int]]:
    """Runs `python -m saas_app serve` (migrations included) with `env` on top of the
    test environment; yields (base URL, pid). With `uvicorn_args`, runs `python -m saas_app
    migrate` then plain `uvicorn saas_app.main:app <uvicorn_args>` instead. stdout and
    stderr go to `log_path`. The server (and any worker it started) is always stopped on
    the way out."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "ENV": "test",
        "JWT_SECRET": TEST_JWT_SECRET,
        "BCRYPT_ROUNDS": "4",
        "PUBLIC_URL": base,
        "RATE_LIMIT_KEY_PREFIX": f"reliability-{uuid.uuid4().hex}",
        **env,
    }
    command = [sys.executable, "-m", "saas_app", "serve", "--port", str(port), "--workers", str(workers)]
    if uvicorn_args is not None:
        subprocess.run([sys.executable, "-m", "saas_app", "migrate"], cwd=ROOT, env=full_env, check=True)
        command = [sys.executable, "-m", "uvicorn", "saas_app.main:app", "--port", str(port), *uvicorn_args]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_ready(base, process)
            _wait_for_workers(log_path, process, workers)
            yield base, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and its workers
                process.wait(timeout=5)


def _wait_for_workers(log_path: Path, process: subprocess.Popen[bytes], workers: int) -> None:
    """/readyz answers as soon as one worker is up: wait until every worker has started,
    or the first one would accept every connection."""
    deadline = time.monotonic() + 30
    while log_path.read_text().count("Application startup complete") < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not start in 30 s:\n{log_path.read_text()}")
        time.sleep(0.05)


@dataclass
class GitHubDeployment:
    server: str
    github: str
    fake: FakeGitHub
    log: Path


@contextmanager
def github_deployment(database_url: str, log_path: Path, **env: str) -> Iterator[GitHubDeployment]:
    """The fake GitHub on one loopback port and the real server, configured against it, on
    another (`running_server`, with `env` on top)."""
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    fake = FakeGitHub(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, callback_url=f"{server}/t/")
    with serve_in_thread(fake) as github:
        settings = {
            "DATABASE_URL": database_url,
            "GITHUB_CLIENT_ID": CLIENT_ID,
            "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
            "GITHUB_AUTHORIZE_URL": f"{github}/login/oauth/authorize",
            "GITHUB_TOKEN_URL": f"{github}/login/oauth/access_token",
            "GITHUB_API_URL": github,
            "GITHUB_TIMEOUT_SECONDS": "5",
            "OAUTH_ALLOWED_REDIRECTS": REDIRECT,
            **env,
        }
        with running_server(settings, log_path, port=port):
            yield GitHubDeployment(server, github, fake, log_path)
