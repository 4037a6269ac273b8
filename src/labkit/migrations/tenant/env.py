"""Alembic environment of ONE tenant schema (schema per tenant): the tenant tables are
written against the placeholder schema ``tenant`` and sent to the tenant's schema with
``schema_translate_map``; ``alembic_version`` lives in the tenant's schema, so every tenant
is at a revision of its own. Run it with ``labkit.tenancy.migrate_schema(connection, name)``."""

from alembic import context

from labkit.errors import LabkitError
from labkit.tenancy import PLACEHOLDER, SCHEMA_METADATA, check_schema_name

connection = context.config.attributes.get("connection")
schema = context.config.attributes.get("schema")
if connection is None or schema is None:
    raise LabkitError(
        "the tenant migrations run on one tenant's schema: use "
        "labkit.tenancy.migrate_schema(connection, schema_name)"
    )
translated = connection.execution_options(
    schema_translate_map={PLACEHOLDER: check_schema_name(schema)}
)
context.configure(
    connection=translated,
    target_metadata=SCHEMA_METADATA,
    version_table_schema=schema,
    include_schemas=False,
)
with context.begin_transaction():
    context.run_migrations()
