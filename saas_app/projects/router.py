"""/t/{tenant}/projects: the guarded example domain router."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError

from saas_app.core.changes import tag
from saas_app.core.http import json_answer
from saas_app.core.openapi import AUTHENTICATED, problems
from saas_app.core.pagination import Cursor, Limit, Page, page_of
from saas_app.core.readcache import Body, read_through
from saas_app.core.readers import Fetch
from saas_app.guards import Principal, require
from saas_app.idempotency.service import OnceDep
from saas_app.projects import service
from saas_app.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate
from saas_app.runtime import NowDep, SessionDep, cache_memo, runtime_of

router = APIRouter(prefix="/t/{tenant}/projects", tags=["projects"], responses=AUTHENTICATED)
Reader = Annotated[Principal, Depends(require("projects:read"))]
Writer = Annotated[Principal, Depends(require("projects:write"))]


def _read(project: object) -> ProjectRead:
    return ProjectRead.model_validate(project, from_attributes=True)


@router.get("", response_model=Page[ProjectRead])
async def list_projects(
    principal: Reader, request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Response:
    """Lists the tenant's projects."""
    # The page parameters inline, not as PageDep: one dependency fewer on a hot route.
    runtime, tenant_id = runtime_of(request), principal.tenant_id
    page = page_of(limit, cursor)  # a malformed cursor is a 422 before the cache sees it

    async def load(fetch: Fetch) -> Body:
        rows, next_cursor = await service.read_page(fetch, tenant_id, page)
        content = Page(items=[_read(p) for p in rows], next_cursor=next_cursor).model_dump_json().encode()
        return Body(content, (tag("projects", tenant_id),))

    if cursor is not None:
        # Later pages are read, not cached: a cursor is any position a caller cares to
        # encode, and one key per position would let a caller fill the cache at will.
        return json_answer((await runtime.reader.run(load)).content)
    # The first page, the same for every caller allowed to read it: cached, as sent, until
    # a project of this tenant changes.
    key = ("projects", tenant_id, limit)
    body = await read_through(
        runtime.cache, runtime.reader, key, Body, load, lambda b: b.depends_on, cache_memo(request)
    )
    assert body is not None
    return json_answer(body.content)


@router.post("", status_code=201, response_model=ProjectRead, responses=problems(409, 422))
async def create_project(
    body: ProjectCreate, principal: Writer, session: SessionDep, now: NowDep, once: OnceDep
) -> Response:
    """Creates a project. With an `Idempotency-Key`, a retry creates nothing twice."""
    if (stored := await once.replay(session, principal)) is not None:
        return stored
    project = await service.create_project(
        session=session,
        tenant_id=principal.tenant_id,
        name=body.name,
        description=body.description,
        created_by=principal.id,
        now=now,
    )
    return await once.answer(session, 201, _read(project))


@router.get("/{project_id}")
async def read_project(project_id: uuid.UUID, principal: Reader, session: SessionDep) -> ProjectRead:
    """Returns a project (404 for another tenant's id)."""
    return _read(
        await service.get_project(session=session, tenant_id=principal.tenant_id, project_id=project_id)
    )


@router.patch("/{project_id}")
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, principal: Writer, session: SessionDep
) -> ProjectRead:
    """Renames or re-describes a project."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        raise RequestValidationError(
            [{"loc": ("body", "name"), "msg": "name cannot be null", "type": "value_error"}]
        )
    project = await service.update_project(
        session=session, tenant_id=principal.tenant_id, project_id=project_id, changes=changes
    )
    return _read(project)


@router.delete("/{project_id}", status_code=204)
async def delete_project(project_id: uuid.UUID, principal: Writer, session: SessionDep) -> Response:
    """Deletes a project."""
    await service.delete_project(session=session, tenant_id=principal.tenant_id, project_id=project_id)
    return Response(status_code=204)
