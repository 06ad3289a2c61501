"""/t/{tenant}/auth: sign-up, the OAuth token endpoint, revocation, logout."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import FormData

from saas_app.abuse import per_ip_limit
from saas_app.auth import second_step, service
from saas_app.auth.errors import NO_STORE, InvalidRequest, SlowDown, UnsupportedGrantType
from saas_app.core.errors import RateLimited
from saas_app.core.http import NO_NUL, has_nul, user_agent
from saas_app.core.openapi import AUTHENTICATED, TENANT, oauth_errors, problems
from saas_app.guards import AnonymousOriginDep, HumanPrincipal, OriginDep
from saas_app.runtime import ClientIPDep, RuntimeDep, SessionDep
from saas_app.tenancy.deps import TenantDep
from saas_app.users.schemas import Credentials, UserRead

router = APIRouter(prefix="/t/{tenant}/auth", tags=["auth"], responses=TENANT)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_FIELD = 4096
MAX_FIELDS = 20
# grant_type -> the form field carrying the second factor (and the service argument).
SECOND_FACTOR_GRANTS = {"mfa_otp": "otp", "mfa_recovery_code": "recovery_code"}


def form_body(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The form's schema, with the bounds `read_form` and `field` enforce on every field: at most
    MAX_FIELD characters, no NUL, and a required one not empty (RFC 6749 §3.2, Appendix A)."""
    for name, field_schema in fields.items():
        if "enum" not in field_schema:
            field_schema.update(maxLength=MAX_FIELD, pattern=NO_NUL)
            if name in required:
                field_schema["minLength"] = 1
    # Parameters it does not know are ignored (RFC 6749 §3.1), within the same bounds.
    extra = {"type": "string", "maxLength": MAX_FIELD, "pattern": NO_NUL}
    schema = {
        "type": "object",
        "properties": fields,
        "required": required,
        "additionalProperties": extra,
        "maxProperties": MAX_FIELDS,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


TOKEN_FORM = form_body(
    {
        "grant_type": {
            "type": "string",
            "enum": ["password", "refresh_token", "mfa_otp", "mfa_recovery_code", "authorization_code"],
        },
        "username": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
        "mfa_token": {"type": "string"},
        "otp": {"type": "string"},
        "recovery_code": {"type": "string"},
        "code": {"type": "string"},
    },
    ["grant_type"],
)


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 successful token response."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str
    scope: str


# The OAuth endpoints answer every refusal in RFC 6749 §5.2 form, those of the tenant lookup
# (404) and of the size limits (413, 414, 431) included (saas_app/core/errors.py).
OAUTH_REFUSALS = oauth_errors(400, 404, 413, 414, 431)

REVOKE_FORM = form_body({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"])


async def read_form(request: Request) -> dict[str, str]:
    """Parses an OAuth form: malformed input is `invalid_request`, never a 422 (RFC 6749 §5.2)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        raise InvalidRequest("Send the parameters form-encoded.")
    try:
        form: FormData = await request.form(max_files=0, max_fields=MAX_FIELDS)
    except Exception as exc:  # the parser's errors vary by content type
        raise InvalidRequest("Malformed form body.") from exc
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        # RFC 6749 §3.2: parameters must not be included more than once; Appendix A: no
        # parameter may contain NUL.
        if key in values or not isinstance(value, str) or len(value) > MAX_FIELD or has_nul(value):
            raise InvalidRequest(f"Parameter {key[:40]!r} is repeated, not text, too long or has a NUL.")
        values[key] = value
    return values


def field(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise InvalidRequest(f"Missing parameter: {name}.")
    return value


@router.post(
    "/register",
    status_code=201,
    dependencies=[Depends(per_ip_limit("register", "REGISTER_RATE_LIMIT"))],
    responses=problems(403, 409, 429),
)
async def register(
    body: Credentials, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, origin: AnonymousOriginDep
) -> UserRead:
    """Signs up a new member of the tenant (when self sign-up is open)."""
    user, roles = await service.register(
        session=session,
        runtime=runtime,
        tenant=tenant,
        email=body.email,
        password=body.password,
        full_name=body.full_name,
        origin=origin,
    )
    return UserRead.of(user, roles)


@router.post(
    "/token",
    openapi_extra=TOKEN_FORM,
    # 403 is `mfa_required` / `mfa_enrollment_required` (with an `mfa_token`); 429 is `slow_down`.
    responses={200: {"model": TokenResponse}, **oauth_errors(403, 429), **OAUTH_REFUSALS},
)
async def token(
    request: Request,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    ip: ClientIPDep,
    origin: AnonymousOriginDep,
) -> JSONResponse:
    """OAuth 2.0 token endpoint (password and refresh_token grants)."""
    form = await read_form(request)
    grant_type = field(form, "grant_type")
    if grant_type != "refresh_token":  # refresh is limited per session, in its service
        try:
            await runtime.limiter.enforce("token", runtime.settings.LOGIN_RATE_LIMIT, ip)
        except RateLimited as exc:
            raise SlowDown(exc.retry_after) from exc
    if grant_type == "password":
        grant = await service.password_grant(
            session=session,
            runtime=runtime,
            tenant=tenant,
            username=field(form, "username"),
            password=field(form, "password"),
            scope=form.get("scope"),
            user_agent=user_agent(request),
            origin=origin,
        )
    elif grant_type == "refresh_token":
        grant = await service.refresh_grant(
            session=session,
            runtime=runtime,
            tenant=tenant,
            refresh_token=field(form, "refresh_token"),
            scope=form.get("scope"),
            origin=origin,
        )
    elif grant_type == "authorization_code":
        grant = await second_step.login_code_grant(
            session=session, runtime=runtime, tenant=tenant, code=field(form, "code"), origin=origin
        )
    elif grant_type in SECOND_FACTOR_GRANTS:
        proof = SECOND_FACTOR_GRANTS[grant_type]
        grant = await second_step.second_factor_grant(
            session=session,
            runtime=runtime,
            tenant=tenant,
            mfa_token=field(form, "mfa_token"),
            origin=origin,
            **{proof: field(form, proof)},
        )
    else:
        raise UnsupportedGrantType(f"Unsupported grant_type {grant_type[:40]!r}.")
    return JSONResponse(grant.body(), headers=NO_STORE)


@router.post("/revoke", openapi_extra=REVOKE_FORM, response_class=Response, responses=OAUTH_REFUSALS)
async def revoke(
    request: Request, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, origin: AnonymousOriginDep
) -> Response:
    """RFC 7009 token revocation: 200 whether or not the token was known."""
    form = await read_form(request)
    await service.revoke_token(
        session=session,
        runtime=runtime,
        tenant=tenant,
        token=field(form, "token"),
        token_type_hint=form.get("token_type_hint"),
        origin=origin,
    )
    return Response(status_code=200, headers=NO_STORE)


@router.post("/logout", status_code=204, responses=AUTHENTICATED)
async def logout(principal: HumanPrincipal, session: SessionDep, origin: OriginDep) -> Response:
    """Ends the caller's session: its refresh and access tokens stop working at once."""
    if principal.session_id is not None:
        await service.end_session(
            session=session,
            tenant_id=principal.tenant_id,
            session_id=principal.session_id,
            origin=origin,
            reason="logout",
        )
    return Response(status_code=204)
