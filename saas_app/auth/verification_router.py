"""Address verification (API-v2 §1): ask for a link (signed in), open one (anyone with it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from saas_app.abuse import per_ip_limit
from saas_app.auth import verification
from saas_app.core.openapi import AUTHENTICATED, TENANT, problems
from saas_app.guards import AnonymousOriginDep, HumanPrincipal, OriginDep
from saas_app.runtime import RuntimeDep, SessionDep
from saas_app.tenancy.deps import TenantDep
from saas_app.users import service as users
from saas_app.users.schemas import StrictModel

router = APIRouter(tags=["auth"], responses=TENANT)


class EmailVerification(StrictModel):
    # No length bounds: an empty or overlong token is as invalid as any other (400).
    token: str


class Accepted(StrictModel):
    """Nothing: the mail is on its way."""


@router.post(
    "/t/{tenant}/users/me/email/verification",
    status_code=202,
    tags=["me"],
    responses={**AUTHENTICATED, **problems(409, 429)},
)
async def request_verification(
    principal: HumanPrincipal, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, origin: OriginDep
) -> Accepted:
    """Mails a new verification link to the signed-in user's address."""
    assert principal.user_id is not None  # a human principal
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=principal.user_id)
    await verification.request_verification(
        session=session, runtime=runtime, tenant=tenant, user=user, origin=origin
    )
    return Accepted()


@router.post(
    "/t/{tenant}/auth/email/verify",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(per_ip_limit("email_verify_ip", "REGISTER_RATE_LIMIT"))],
    responses=problems(400, 409, 422, 429),
)
async def verify_email(
    body: EmailVerification, tenant: TenantDep, session: SessionDep, origin: AnonymousOriginDep
) -> Response:
    """Opens a verification link: the address becomes verified (and, for a change, the
    account's address). 409 `user_exists` when another account took the address since."""
    await verification.verify(session=session, tenant=tenant, token=body.token, origin=origin)
    return Response(status_code=204)
