"""Every model, imported in one place so metadata is complete (Alembic, tests)."""

from saas_app.api_keys.models import ApiKey
from saas_app.audit.models import AuditEvent
from saas_app.auth.models import AccountToken, LoginCode, RefreshToken, Session
from saas_app.core.db import Base
from saas_app.github.models import SpentState
from saas_app.idempotency.models import IdempotentAnswer
from saas_app.invitations.models import Invitation
from saas_app.mail.models import MailMessage
from saas_app.mfa.models import MfaChallenge, RecoveryCode
from saas_app.projects.models import Project
from saas_app.rbac.models import Role, UserRole
from saas_app.tenancy.models import Tenant
from saas_app.users.models import Identity, User

__all__ = [
    "AccountToken",
    "ApiKey",
    "AuditEvent",
    "Base",
    "IdempotentAnswer",
    "Identity",
    "Invitation",
    "LoginCode",
    "MailMessage",
    "MfaChallenge",
    "Project",
    "RecoveryCode",
    "RefreshToken",
    "Role",
    "Session",
    "SpentState",
    "Tenant",
    "User",
    "UserRole",
]
