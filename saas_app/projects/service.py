"""Projects: the example domain guarded by `projects:read` / `projects:write`."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from saas_app.core.errors import NotFound
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.projects.models import Project


class ProjectNotFound(NotFound):
    code = "project_not_found"
    title = "Project not found"


async def list_projects(
    *, session: AsyncSession, tenant_id: uuid.UUID, page: PageParams
) -> tuple[list[Project], str | None]:
    """Returns a page of the tenant's projects, oldest first."""
    return split_page(list((await session.scalars(page_query(tenant_id, page))).all()), page)


def read_page(session: Session, tenant_id: uuid.UUID, page: PageParams) -> tuple[list[Project], str | None]:
    """`list_projects` for the read cache's (synchronous) loads."""
    return split_page(list(session.scalars(page_query(tenant_id, page)).all()), page)


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
