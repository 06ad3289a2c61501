from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from saas_app.users.schemas import NAME_SCHEMA, STRIPPED_NOT_BLANK, StrictModel

ProjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    STRIPPED_NOT_BLANK,
    NAME_SCHEMA,
]
Description = Annotated[str, StringConstraints(max_length=10_000)]


class ProjectCreate(StrictModel):
    name: ProjectName
    description: Description | None = None


class ProjectUpdate(StrictModel):
    # May be left out, never null (the route refuses it): the schema shows no null.
    name: ProjectName | SkipJsonSchema[None] = None
    description: Description | None = None


class ProjectRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    created_by: uuid.UUID | None
    created_at: datetime
