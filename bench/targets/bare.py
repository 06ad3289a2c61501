"""The framework's ceiling: plain FastAPI answering GET /users/me with a static,
UserRead-shaped body. No auth, no database, no middleware."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI(title="bench-bare")

# The same fields as saas_app.users.schemas.UserRead, as the JSON it serialises to.
ME: dict[str, Any] = {
    "id": "0b6f7a52-2f5c-4a1e-9d1c-6a3e2f1b9c10",
    "email": "owner@bench.example.com",
    "full_name": "Bench Owner",
    "roles": ["owner"],
    "permissions": [
        "projects:read",
        "projects:write",
        "users:read",
        "users:manage",
        "roles:manage",
        "api_keys:manage",
        "audit:read",
        "tenant:manage",
    ],
    "is_active": True,
    "mfa_enabled": False,
    "identities": [],
    "created_at": "2026-11-21T22:00:00Z",
}


@app.get("/users/me")
async def read_me() -> dict[str, Any]:
    return ME
