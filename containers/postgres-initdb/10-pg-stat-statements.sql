-- Run by the postgres image once, when its data volume is empty (docker-entrypoint-initdb.d),
-- with psql as the postgres superuser. The same preparation as the course's embedded server:
-- pg_stat_statements in template1, so that every database the course creates has it, and in
-- the postgres database itself. (shared_preload_libraries is set in compose.yaml.)
\connect template1
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\connect postgres
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
