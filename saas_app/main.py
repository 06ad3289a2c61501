"""The application factory; `app` is what uvicorn serves."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from saas_app.api_keys.router import router as api_keys_router
from saas_app.audit.router import router as audit_router
from saas_app.auth.errors import OAuthError, oauth_error_handler
from saas_app.auth.introspection import router as introspection_router
from saas_app.auth.recovery_router import router as recovery_router
from saas_app.auth.router import router as auth_router
from saas_app.auth.verification_router import router as verification_router
from saas_app.core.clock import Clock, SystemClock
from saas_app.core.config import Settings, get_settings
from saas_app.core.docs import install_docs
from saas_app.core.errors import install_error_handlers
from saas_app.core.http import HttpEdge
from saas_app.core.logging import configure_logging
from saas_app.core.openapi import EVERY_ROUTE, install_openapi
from saas_app.core.proxy import install_proxy_headers, refuse_foreign_proxy_trust
from saas_app.discovery import router as discovery_router
from saas_app.github.router import link_router as github_link_router
from saas_app.github.router import router as github_router
from saas_app.invitations.router import accept_router as accept_invitation_router
from saas_app.invitations.router import router as invitations_router
from saas_app.mail.sender import MailSender
from saas_app.mfa.router import admin_router as mfa_admin_router
from saas_app.mfa.router import me_router as mfa_me_router
from saas_app.platform import router as platform_router
from saas_app.projects.router import router as projects_router
from saas_app.rbac.router import router as roles_router
from saas_app.runtime import Runtime, close_runtime
from saas_app.tenancy.router import router as tenancy_router
from saas_app.users.router import admin_router, me_router


def mail_sender(runtime: Runtime) -> MailSender | None:
    """The outbox's sender in this process, when there is a server to send to and the
    deployment did not move it to its own process (`python -m saas_app mail worker`)."""
    settings = runtime.settings
    if settings.SMTP_URL is None or not settings.MAIL_SENDER_IN_APP:
        return None
    sender = MailSender.for_runtime(runtime)
    sender.start()
    return sender


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Builds the app; engines, keys and limiters are made in the lifespan, not at import."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        refuse_foreign_proxy_trust(settings)
        runtime = Runtime.build(settings, clock or SystemClock(), http_transport)
        app.state.runtime = runtime
        await runtime.cache.feed.start()
        mail = mail_sender(runtime)
        # Everything built so far (modules, routes, schemas, the engine) lives as long as
        # the process: moved out of the collector's generations, a full collection of a
        # busy worker no longer walks the whole start-up heap.
        gc.freeze()
        try:
            yield
        finally:
            if mail is not None:
                await mail.close()
            await close_runtime(runtime)

    app = FastAPI(
        title="saas_app",
        version="1.0.0",
        summary="Multi-tenant authentication: OAuth2 password flow, refresh rotation, RBAC.",
        lifespan=lifespan,
        responses=EVERY_ROUTE,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: core/docs.py serves its own.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # A path with a stray "/" is a 404, not Starlette's redirect: that redirect builds its
        # Location from the Host header, which a client chooses (a cache in front could keep
        # a redirect to another site), and every path of this API is exact.
        redirect_slashes=False,
    )
    install_openapi(app)
    install_docs(app)
    install_error_handlers(app)
    app.add_exception_handler(OAuthError, oauth_error_handler)
    # Routes are matched in order, one regular expression at a time (and the matching
    # router's twice): the most requested come first, the domain routes that machine
    # clients call, then the signed-in user's own. Order matters for correctness in one
    # place only: me_router before admin_router, or /users/me would match /users/{user_id}.
    for router in (
        projects_router,
        me_router,
        auth_router,
        recovery_router,
        verification_router,
        platform_router,
        tenancy_router,
        mfa_me_router,
        admin_router,
        mfa_admin_router,
        roles_router,
        audit_router,
        github_router,
        github_link_router,
        api_keys_router,
        invitations_router,
        accept_invitation_router,
        discovery_router,
        introspection_router,
    ):
        app.include_router(router)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
        )
    app.add_middleware(  # outermost but one: sees every answer, refusals of oversized input included
        HttpEdge,
        max_body_bytes=settings.MAX_BODY_BYTES,
        max_header_bytes=settings.MAX_HEADER_BYTES,
        max_url_bytes=settings.MAX_URL_BYTES,
    )
    install_proxy_headers(app, settings)  # outside HttpEdge: its logs name the real client
    return app


app = create_app()
