# syntax=docker/dockerfile:1
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin saas \
    && mkdir -p /app/data && chown saas /app/data
COPY alembic.ini ./
COPY migrations ./migrations
COPY saas_app ./saas_app

USER saas
ENV ENV=prod \
    DATABASE_URL=sqlite+aiosqlite:////app/data/saas_app.db
EXPOSE 8000

# `serve` runs the migrations, then uvicorn (as `make run` does). X-Forwarded-For is
# believed only from FORWARDED_ALLOW_IPS (empty: nobody); set it to your proxy's address.
# See docs/deployment.md.
CMD ["python", "-m", "saas_app", "serve", "--host", "0.0.0.0", "--port", "8000"]
