"""Alembic environment of the inventory service: its own database, its own metadata
(`labkit.microservices.METADATA["inventory"]`), its own `alembic_version` table."""

from alembic import context

from labkit.microservices import run_alembic_env

run_alembic_env(context, "inventory")
