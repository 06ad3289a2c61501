"""/t/{tenant}/auth/password: forgot (a reset link by mail) and reset (API-v2 §1)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Depends, Response
from pydantic import field_validator

from saas_app.abuse import per_ip_limit
from saas_app.auth import recovery
from saas_app.core.openapi import TENANT, problems
from saas_app.guards import AnonymousOriginDep
from saas_app.runtime import RuntimeDep, SessionDep
from saas_app.security.emails import EmailAddress, normalize_email
from saas_app.tenancy.deps import TenantDep
from saas_app.users.schemas import NewPassword, StrictModel, check_password

router = APIRouter(prefix="/t/{tenant}/auth/password", tags=["auth"], responses=TENANT)


class ForgotPassword(StrictModel):
    email: EmailAddress


class PasswordReset(StrictModel):
    # No length bounds here: an empty or overlong token is as invalid as any other, and
    # gets the same 400 invalid_token (account_tokens.spend refuses it without a lookup).
    token: str
    new_password: str = NewPassword

    _password_policy = field_validator("new_password")(check_password)


class Accepted(StrictModel):
    """Nothing: the same empty object whatever happened."""


@router.post(
    "/forgot",
    status_code=202,
    dependencies=[Depends(per_ip_limit("forgot_password_ip", "REGISTER_RATE_LIMIT"))],
    responses=problems(422, 429),
)
async def forgot_password(
    body: ForgotPassword,
    tenant: TenantDep,
    runtime: RuntimeDep,
    origin: AnonymousOriginDep,
    background: BackgroundTasks,
) -> Accepted:
    """Mails a reset link if the address has an account. The answer is the same, and takes
    the same time, either way: the lookup runs after it is sent."""
    # Per address across every tenant: anyone may open a tenant with any owner address, so
    # a per-tenant count would let one IP mail a victim from as many tenants as it makes.
    address, limit = normalize_email(body.email), runtime.settings.FORGOT_PASSWORD_RATE_LIMIT
    await runtime.limiter.enforce(recovery.FORGOT_BUCKET, limit, address)
    background.add_task(recovery.request_reset, runtime=runtime, tenant=tenant, email=address, origin=origin)
    return Accepted()


@router.post(
    "/reset",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(per_ip_limit("password_reset_ip", "REGISTER_RATE_LIMIT"))],
    responses=problems(400, 422, 429),
)
async def reset_password(
    body: PasswordReset,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: AnonymousOriginDep,
) -> Response:
    """Sets a new password with the token of a reset mail; every session of the user ends."""
    await recovery.reset_password(
        session=session,
        runtime=runtime,
        tenant=tenant,
        token=body.token,
        new_password=body.new_password,
        origin=origin,
    )
    return Response(status_code=204)
