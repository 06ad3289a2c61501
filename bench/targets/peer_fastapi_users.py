"""The peer: fastapi-users' documented SQLAlchemy (aiosqlite) + JWT bearer setup.

The docs' "Full example" (db.py, schemas.py, users.py, app.py) folded into one module,
unchanged but for where the database URL and secret come from, and for the password hash's
cost (PEER_FAST_HASH, below). It runs in its own venv
(bench/.venv-peer): fastapi-users caps SQLAlchemy below 2.1. Benchmarked: GET /users/me.
PEER_DATABASE_URL is a SQLite file, or with `run.py --postgres` a fresh PostgreSQL
database (`postgresql+asyncpg://...`); the lifespan's create_all makes the table on
either.
"""

# The docs' own style: dependencies as argument defaults.
# ruff: noqa: B008

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users.password import PasswordHelper
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

DATABASE_URL = os.environ.get("PEER_DATABASE_URL", "sqlite+aiosqlite:///./peer.db")
SECRET = os.environ.get("PEER_SECRET", "bench-only-peer-secret-0123456789abcdef")
# PEER_FAST_HASH=1 (run.py sets it): Argon2 at its lowest cost, configured the way the docs'
# "Password hash" page shows. No measured request hashes a password; it makes signing up and
# logging in the mixed workload's hundreds of users take seconds instead of minutes, as
# BCRYPT_ROUNDS=4 does for saas_app's servers of that workload.
FAST_HASH = os.environ.get("PEER_FAST_HASH", "") == "1"


# db.py
class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


engine = create_async_engine(DATABASE_URL)
async_session_maker = async_sessionmaker(engine, expire_on_commit=False)


async def create_db_and_tables() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


async def get_async_session() -> AsyncGenerator[AsyncSession, None]:
    async with async_session_maker() as session:
        yield session


async def get_user_db(
    session: AsyncSession = Depends(get_async_session),
) -> AsyncGenerator[SQLAlchemyUserDatabase[User, uuid.UUID], None]:
    yield SQLAlchemyUserDatabase(session, User)


# schemas.py
class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


class UserUpdate(schemas.BaseUserUpdate):
    pass


# users.py
class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


password_helper = (
    PasswordHelper(PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),)))
    if FAST_HASH
    else None  # the library's default: Argon2 (then bcrypt) at pwdlib's recommended cost
)


async def get_user_manager(
    user_db: SQLAlchemyUserDatabase[User, uuid.UUID] = Depends(get_user_db),
) -> AsyncGenerator[UserManager, None]:
    yield UserManager(user_db, password_helper)


bearer_transport = BearerTransport(tokenUrl="auth/jwt/login")


def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
    return JWTStrategy(secret=SECRET, lifetime_seconds=3600)


auth_backend = AuthenticationBackend(
    name="jwt",
    transport=bearer_transport,
    get_strategy=get_jwt_strategy,
)

fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])
current_active_user = fastapi_users.current_user(active=True)


# app.py
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await create_db_and_tables()  # the docs' stand-in for migrations
    yield


app = FastAPI(lifespan=lifespan)
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt", tags=["auth"])
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth", tags=["auth"])
app.include_router(fastapi_users.get_reset_password_router(), prefix="/auth", tags=["auth"])
app.include_router(fastapi_users.get_verify_router(UserRead), prefix="/auth", tags=["auth"])
app.include_router(fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users", tags=["users"])


@app.get("/authenticated-route")
async def authenticated_route(user: User = Depends(current_active_user)) -> dict[str, str]:
    return {"message": f"Hello {user.email}!"}
