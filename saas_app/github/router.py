"""GitHub sign-in routes: authorize, callback, and linking from an account."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from saas_app.audit.service import Origin
from saas_app.auth import login_codes
from saas_app.auth.errors import NO_STORE, MfaRequired
from saas_app.auth.issuance import open_session
from saas_app.auth.second_step import second_step
from saas_app.core.errors import PROBLEM_JSON
from saas_app.core.http import user_agent as request_user_agent
from saas_app.core.openapi import AUTHENTICATED, RECENT_LOGIN, REF, OAuthErrorBody, Problem, problems
from saas_app.github import service
from saas_app.github.client import GitHubProfile
from saas_app.guards import AnonymousOriginDep, CurrentPrincipal, OriginDep, require_recent_login
from saas_app.runtime import Runtime, RuntimeDep, SessionDep, WriteSessionDep
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.deps import TenantDep
from saas_app.users import service as users
from saas_app.users.router import describe

# 404 also when GitHub sign-in is not configured; 400 for a `redirect_uri` not allowed.
router = APIRouter(prefix="/t/{tenant}/auth/github", tags=["github"], responses=problems(400, 404))
# Linking or unlinking changes how the user signs in: a stolen access token must not be
# enough (ASVS 5.0 V7.5.1), so both need a login of the last 10 minutes, as TOTP enrolment
# does. Neither request has a body to carry a password: an older login signs in again.
link_router = APIRouter(
    prefix="/t/{tenant}/users/me/identities/github",
    tags=["me"],
    dependencies=[Depends(require_recent_login())],
    responses={**AUTHENTICATED, **RECENT_LOGIN, **problems(409)},
)
COOKIE = "saas_app_github"
RedirectParam = Annotated[str | None, Query(max_length=2048)]
# The state carries the flow (redirect_uri included); GitHub's code and error are short. Bounded
# so the worst-case URL stays under the 64 KiB request line uvicorn accepts.
StateParam = Annotated[str | None, Query(max_length=4096)]
CallbackParam = Annotated[str | None, Query(max_length=256)]


def _with_cookie(response: Response, runtime: Runtime, tenant: TenantInfo, verifier: str) -> Response:
    response.set_cookie(
        COOKIE,
        verifier,
        max_age=service.STATE_TTL_SECONDS,
        path=f"/t/{tenant.slug}/auth/github",
        httponly=True,
        samesite="lax",  # sent on GitHub's top-level redirect back, not on cross-site posts
        secure=runtime.settings.PUBLIC_URL.startswith("https://"),
    )
    return response


def _redirect(target: str, **params: str) -> RedirectResponse:
    """302 to an allow-listed URI with `params` added to its query."""
    parts = urlsplit(target)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=302, headers=NO_STORE)


@router.get("/authorize", status_code=302, response_class=RedirectResponse)
async def authorize(
    tenant: TenantDep, runtime: RuntimeDep, origin: AnonymousOriginDep, redirect_uri: RedirectParam = None
) -> Response:
    """Sends the browser to GitHub (state + PKCE S256), binding the flow to a cookie."""
    flow = service.start_flow(
        runtime=runtime, tenant=tenant, mode="login", redirect_uri=redirect_uri, now=origin.now
    )
    response = RedirectResponse(flow.authorize_url, status_code=302, headers=NO_STORE)
    return _with_cookie(response, runtime, tenant, flow.verifier)


@link_router.post("")
async def start_link(
    principal: CurrentPrincipal,
    tenant: TenantDep,
    runtime: RuntimeDep,
    origin: OriginDep,
    redirect_uri: RedirectParam = None,
) -> JSONResponse:
    """Starts linking a GitHub account to the signed-in user; open `authorize_url` in the browser."""
    flow = service.start_flow(
        runtime=runtime,
        tenant=tenant,
        mode="link",
        redirect_uri=redirect_uri,
        user_id=principal.user_id,
        now=origin.now,
    )
    response = JSONResponse({"authorize_url": flow.authorize_url}, headers=NO_STORE)
    _with_cookie(response, runtime, tenant, flow.verifier)
    return response


@link_router.delete("", status_code=204)
async def unlink(principal: CurrentPrincipal, session: SessionDep, origin: OriginDep) -> Response:
    """Unlinks GitHub (refused if it is the user's only way to sign in)."""
    # SessionDep, not WriteSessionDep: a DELETE's unit of work already writes, and it is the
    # one the principal was read in; a second writer would wait on SQLite's lock forever.
    assert principal.user_id is not None
    user = await users.get_user(session=session, tenant_id=principal.tenant_id, user_id=principal.user_id)
    await service.unlink(session=session, user=user, origin=origin)
    return Response(status_code=204)


@router.get(
    "/callback",
    responses={
        302: {"description": "Back to the client's redirect_uri"},
        # 403: `signup_closed` / `account_disabled` problems, or the `mfa_required` OAuth error.
        403: {
            "model": OAuthErrorBody,
            "content": {PROBLEM_JSON: {"schema": {"$ref": f"{REF}{Problem.__name__}"}}},
        },
        **problems(409, 502),
    },
)
async def callback(
    request: Request,
    tenant: TenantDep,
    session: WriteSessionDep,
    runtime: RuntimeDep,
    origin: AnonymousOriginDep,
    code: CallbackParam = None,
    state: StateParam = None,
    error: CallbackParam = None,
) -> Response:
    """GitHub's redirect back: exchange the code, then sign in, link or create the user."""
    github = service.client(runtime)
    flow = service.read_state(
        runtime=runtime, tenant=tenant, state=state, verifier=request.cookies.get(COOKIE), now=origin.now
    )
    await service.spend_state(session=session, tenant=tenant, flow=flow)
    await session.commit()  # the state is spent even if GitHub fails; hold no lock meanwhile
    if error is not None or not code:
        raise service.GitHubDenied(f"GitHub answered: {(error or 'no code')[:64]}.")
    verifier = request.cookies[COOKIE]
    token = await github.exchange_code(
        code=code, redirect_uri=service.callback_url(runtime, tenant.slug), code_verifier=verifier
    )
    profile = await github.profile(token)
    if flow.mode == "link" and flow.user_id is not None:
        user = await service.link(
            session=session, tenant=tenant, user_id=flow.user_id, profile=profile, origin=origin
        )
        response: Response = (
            _redirect(flow.redirect_uri, linked="github")
            if flow.redirect_uri
            else JSONResponse((await describe(session, tenant.id, [user]))[0].model_dump(mode="json"))
        )
    else:
        response = await _signed_in(request, session, runtime, tenant, profile, flow, origin)
    response.delete_cookie(COOKIE, path=f"/t/{tenant.slug}/auth/github")
    return response


async def _signed_in(
    request: Request,
    session: WriteSessionDep,
    runtime: Runtime,
    tenant: TenantInfo,
    profile: GitHubProfile,
    flow: service.FlowState,
    origin: Origin,
) -> Response:
    user = await service.sign_in(
        session=session, runtime=runtime, tenant=tenant, profile=profile, origin=origin
    )
    user_agent = request_user_agent(request)
    pending = await second_step(
        session=session,
        tenant=tenant,
        user=user,
        requested=None,
        amr=("github",),
        user_agent=user_agent,
        now=origin.now,
    )
    if pending is not None:
        return _second_step(pending, flow.redirect_uri)
    if flow.redirect_uri:
        code = await login_codes.issue(
            session=session, user=user, amr=("github",), user_agent=user_agent, now=origin.now
        )
        return _redirect(flow.redirect_uri, code=code)
    grant = await open_session(
        session=session,
        runtime=runtime,
        tenant=tenant,
        user=user,
        requested=None,
        amr=("github",),
        user_agent=user_agent,
        origin=origin,
    )
    return JSONResponse(grant.body(), headers=NO_STORE)


def _second_step(pending: MfaRequired, redirect_uri: str | None) -> Response:
    if redirect_uri:
        return _redirect(redirect_uri, error=pending.error, mfa_token=pending.mfa_token)
    return JSONResponse(pending.body(), status_code=pending.status, headers=NO_STORE)
