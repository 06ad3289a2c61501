"""Projects: the example domain guarded by `projects:read` / `projects:write`."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.core.errors import NotFound
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.core.readers import Fetch, Query, Row
from saas_app.projects.models import Project


class ProjectNotFound(NotFound):
    code = "project_not_found"
    title = "Project not found"


async def list_projects(
    *, session: AsyncSession, tenant_id: uuid.UUID, page: PageParams
) -> tuple[list[Project], str | None]:
    """Returns a page of the tenant's projects, oldest first."""
    return split_page(list((await session.scalars(page_query(tenant_id, page))).all()), page)


def _page_query(*, after_cursor: bool) -> Query:
    """`page_query` with every value a parameter, built once (a first page, or a later one)."""
    query = select(Project.id, Project.name, Project.description, Project.created_by, Project.created_at)
    query = query.where(Project.tenant_id == bindparam("tid"))
    if after_cursor:
        at = bindparam("at", type_=Project.created_at.type)
        query = query.where(
            or_(Project.created_at > at, and_(Project.created_at == at, Project.id > bindparam("after_id")))
        )
    return Query(query.order_by(Project.created_at, Project.id).limit(bindparam("limit")))


FIRST_PAGE, LATER_PAGE = _page_query(after_cursor=False), _page_query(after_cursor=True)


async def read_page(fetch: Fetch, tenant_id: uuid.UUID, page: PageParams) -> tuple[list[Row], str | None]:
    """`list_projects` for the read cache's loads (rows with ProjectRead's fields)."""
    params = {"tid": tenant_id, "limit": page.limit + 1}  # one more: is there a next page?
    if page.after is None:
        return split_page(await fetch.all(FIRST_PAGE, params), page)
    after = {"at": page.after.at, "after_id": page.after.id}
    return split_page(await fetch.all(LATER_PAGE, {**params, **after}), page)


def page_query(tenant_id: uuid.UUID, page: PageParams) -> Select[tuple[Project]]:
    query = select(Project).where(Project.tenant_id == tenant_id)
    return keyset_page(query, page, Project.created_at, Project.id)


async def get_project(*, session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """Returns a project by id; another tenant's project is not found."""
    project = await session.scalar(
        select(Project).where(Project.id == project_id, Project.tenant_id == tenant_id)
    )
    if project is None:
        raise ProjectNotFound()
    return project


async def create_project(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    description: str | None,
    created_by: uuid.UUID | None,
    now: datetime,
) -> Project:
    """Creates a project."""
    project = Project(
        tenant_id=tenant_id, name=name, description=description, created_by=created_by, created_at=now
    )
    session.add(project)
    await session.flush()
    return project


async def update_project(
    *, session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID, changes: dict[str, str | None]
) -> Project:
    """Updates a project's name and/or description."""
    project = await get_project(session=session, tenant_id=tenant_id, project_id=project_id)
    for name, value in changes.items():
        setattr(project, name, value)
    await session.flush()
    return project


async def delete_project(*, session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """Deletes a project."""
    project = await get_project(session=session, tenant_id=tenant_id, project_id=project_id)
    await session.delete(project)
