"""Every model, imported in one place so metadata is complete (Alembic, tests)."""

from saas_app.audit.models import AuditEvent
from saas_app.auth.models import RefreshToken, Session
from saas_app.core.db import Base
from saas_app.projects.models import Project
from saas_app.rbac.models import Role, UserRole
from saas_app.tenancy.models import Tenant
from saas_app.users.models import User

__all__ = ["AuditEvent", "Base", "Project", "RefreshToken", "Role", "Session", "Tenant", "User", "UserRole"]
