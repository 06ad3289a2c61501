"""/t/{tenant}/auth/password: forgot (a reset link by mail) and reset (API-v2 §1)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Depends, Response
from pydantic import Field, field_validator

from saas_app.abuse import per_ip_limit
from saas_app.auth import recovery
from saas_app.auth.account_tokens import MAX_TOKEN_LENGTH
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
    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)
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
    limit = runtime.settings.FORGOT_PASSWORD_RATE_LIMIT
    await runtime.limiter.enforce(recovery.FORGOT_BUCKET, limit, str(tenant.id), normalize_email(body.email))
    background.add_task(
        recovery.request_reset, runtime=runtime, tenant=tenant, email=body.email, origin=origin
    )
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
