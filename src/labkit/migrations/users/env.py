"""Alembic environment of the users service: its own database, its own metadata
(`labkit.microservices.METADATA["users"]`), its own `alembic_version` table."""

from alembic import context

from labkit.microservices import run_alembic_env

run_alembic_env(context, "users")
