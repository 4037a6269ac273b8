"""Alembic environment of the orders service: its own database, its own metadata
(`labkit.microservices.METADATA["orders"]`), its own `alembic_version` table."""

from alembic import context

from labkit.microservices import run_alembic_env

run_alembic_env(context, "orders")
