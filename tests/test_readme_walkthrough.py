"""The README's walk-through, run as written against a live `make run PORT=<free port>`.

Convention (README.md): every fenced block whose language is exactly `bash` belongs to
one script, run top to bottom with `bash -euo pipefail` from the repository root, with
`$BASE` pointing at the server. Blocks that cannot run here (real GitHub, Docker, a
server in the foreground, the CLI against the default database) are fenced `sh`,
`console` or `text` and skipped. So a README edit that breaks a step (a dead token, a
renamed field) fails this test; the script checks expected statuses itself (`[ "$STATUS"
= 401 ]`) and this test checks that the key answers appeared in its output.

The test installs nothing: without jq, curl or make it skips (fails under CI=true, where
`make test` installs jq), and it never lets `make run` reinstall the venv.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, ROOT
from tests.servers import free_port, wait_until_ready

pytestmark = pytest.mark.e2e

IN_CI = os.environ.get("CI", "").lower() == "true"
STAMP = ".venv/.installed"
FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
# Answers the walk-through must show whatever else the README says (every `# ->` line of
# its bash blocks is checked too).
KEY_ANSWERS = (
    '{"tenant":"acme","owner":"ada@acme.example","roles":["owner"]}',
    '{"email":"bob@acme.example","roles":["viewer"]}',
    '{"error":"invalid_grant"}',
    "after reuse: 401",
    "logout: 204",
    "after logout: 401",
    '{"recovery_codes":10}',
    '{"error":"mfa_required"}',
    '{"email":"ada@acme.example","mfa_enabled":true}',
    "revoke: 204",
    "revoked key: 401",
)
# Outer `make` (make test) passes its flags and command-line variables down through these.
MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def bash_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash blocks, in order."""
    return [m["body"] for m in FENCE.finditer(markdown) if m["lang"] == "bash"]


def expected_answers(script: str) -> list[re.Pattern[str]]:
    """The README's `# -> answer` lines as patterns; `...` in an answer stands for
    anything (an id, a key prefix)."""
    answers = re.findall(r"^# -> (.+)$", script, re.M)
    return [re.compile(".*".join(map(re.escape, answer.strip().split("...")))) for answer in answers]


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"the README walk-through needs {', '.join(missing)} (make test installs jq where it can)"
    if IN_CI:
        pytest.fail(f"{reason}; CI must run it")
    pytest.skip(reason)


def make_command(port: int) -> list[str]:
    """`make run PORT=<port>`, as the README says. The suite runs inside the venv make
    set up; if make does not see it as set up (the suite run outside make), tell it the
    stamp is current rather than reinstall from a test. Under CI, `make test` has just
    set it up: a stale stamp there means `make run` would reinstall, which is a bug."""
    up_to_date = subprocess.run(["make", "-q", STAMP], cwd=ROOT, env=clean_env(), check=False)
    if up_to_date.returncode == 0:
        return ["make", "run", f"PORT={port}"]
    if IN_CI:
        pytest.fail("`make run` would reinstall the venv that `make test` has just set up")
    return ["make", f"--assume-old={STAMP}", "run", f"PORT={port}"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {*MAKE_ENV, "PUBLIC_URL", "HOST", "PORT"}}
    return {**env, **extra}


@contextmanager
def make_run(database_url: str, log_path: Path) -> Iterator[str]:
    """`make run PORT=<free port>` on this test's database; yields the base URL."""
    port = free_port()
    env = clean_env(
        ENV="dev",
        DATABASE_URL=database_url,
        RATE_LIMIT_KEY_PREFIX=f"readme-{uuid.uuid4().hex}",
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
    )
    with log_path.open("w") as log:
        process = subprocess.Popen(
            make_command(port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                wait_until_ready(base, process)
            except RuntimeError as exc:
                pytest.fail(
                    f"`make run PORT={port}` did not serve on that port ({exc}):\n{log_path.read_text()}"
                )
            yield base
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """make, its shell and the server share the session started above: stop them all."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def issuer_of(base: str) -> str:
    """Signs up a second tenant and returns the `iss` of its owner's access token."""
    owner = {"email": "probe@probe.example", "password": "a probe password long enough"}
    with httpx.Client(base_url=base, timeout=10) as http:
        created = http.post("/tenants", json={"slug": "probe", "name": "Probe", "owner": owner})
        assert created.status_code == 201, created.text
        login = http.post(
            "/t/probe/auth/token",
            data={"grant_type": "password", "username": owner["email"], "password": owner["password"]},
        )
        assert login.status_code == 200, login.text
    payload = login.json()["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    issuer: str = claims["iss"]
    return issuer


def test_readme_bash_blocks_are_the_walkthrough() -> None:
    """The extraction itself: the walk-through's steps are there, GitHub's are not."""
    script = "\n".join(bash_blocks((ROOT / "README.md").read_text()))
    for step in range(1, 13):
        assert f"# {step}. " in script, f"step {step} is not in a ```bash block"
    assert "github" not in script.lower()
    assert "docker" not in script.lower()


def test_readme_walkthrough_runs_as_written_against_make_run(database_url: str, tmp_path: Path) -> None:
    require_tools("bash", "curl", "jq", "make")
    text = "\n".join(bash_blocks((ROOT / "README.md").read_text()))
    script = tmp_path / "walkthrough.sh"
    script.write_text(text)

    with make_run(database_url, tmp_path / "server.log") as base:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", str(script)],
            cwd=ROOT,
            env=clean_env(BASE=base),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        output = f"--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
        assert run.returncode == 0, f"the walk-through stopped (exit {run.returncode}):\n{output}"
        for answer in KEY_ANSWERS:
            assert answer in run.stdout, f"expected {answer!r} in the walk-through's output:\n{output}"
        for pattern in expected_answers(text):
            assert pattern.search(run.stdout), f"README promises {pattern.pattern!r}:\n{output}"
        # make run PORT=... also moved PUBLIC_URL, the base of the token issuer.
        assert issuer_of(base) == f"{base}/t/probe"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The Makefile and requirements in an empty directory, with a venv stamp written as
    `make setup` writes it: `make -q` / `make -n` there touch nothing real."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    requirements = b"".join(
        (tmp_path / name).read_bytes() for name in ("requirements.txt", "requirements-dev.txt")
    )
    checksum = (
        subprocess.run(["cksum"], input=requirements, capture_output=True, check=True).stdout.decode().strip()
    )
    (tmp_path / STAMP).write_text(checksum + "\n")
    return tmp_path


def make_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    require_tools("make")
    return subprocess.run(
        ["make", *args], cwd=directory, env=clean_env(), capture_output=True, text=True, check=False
    )


def test_a_checkout_touching_requirements_does_not_reinstall(project_copy: Path) -> None:
    """git checkout / clone gives requirements*.txt a new date, not new content."""
    later = (project_copy / STAMP).stat().st_mtime + 3600
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(project_copy / name, (later, later))
    assert make_in(project_copy, "-q", STAMP).returncode == 0
    assert "pip install" not in make_in(project_copy, "-n", "run").stdout

    with (project_copy / "requirements.txt").open("a") as requirements:
        requirements.write("newpackage==1.0\n")
    assert make_in(project_copy, "-q", STAMP).returncode == 1  # a changed pin does reinstall


@pytest.mark.parametrize(
    ("args", "host", "port", "public_url"),
    [
        ((), "127.0.0.1", "8000", "http://127.0.0.1:8000"),
        (("PORT=8080",), "127.0.0.1", "8080", "http://127.0.0.1:8080"),
        (("HOST=0.0.0.0", "PORT=9000"), "0.0.0.0", "9000", "http://127.0.0.1:9000"),  # noqa: S104
        (("HOST=::1", "PORT=9001"), "::1", "9001", "http://[::1]:9001"),
        (
            ("PORT=8080", "PUBLIC_URL=https://auth.example.com"),
            "127.0.0.1",
            "8080",
            "https://auth.example.com",
        ),
    ],
)
def test_make_run_passes_host_and_port_and_follows_them_with_public_url(
    project_copy: Path, args: tuple[str, ...], host: str, port: str, public_url: str
) -> None:
    recipe = make_in(project_copy, "-n", "run", *args).stdout
    assert (
        f"PUBLIC_URL='{public_url}' .venv/bin/python -m saas_app serve --host '{host}' --port '{port}'"
        in recipe
    )
