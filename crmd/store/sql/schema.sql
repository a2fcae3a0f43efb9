-- Migrations' bookkeeping and crmd's advisory locks (crmd/store/migrate.py, crmd/store/timers.py).

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS crmd_schema_version (
    conjunto    text        NOT NULL,
    versao      integer     NOT NULL,
    nome        text        NOT NULL,
    aplicado_em timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conjunto, versao)
);

-- name: schema_versions_applied
SELECT conjunto, versao FROM crmd_schema_version;

-- name: schema_version_table_exists
SELECT to_regclass('crmd_schema_version') IS NOT NULL;

-- name: schema_version_record
INSERT INTO crmd_schema_version (conjunto, versao, nome) VALUES ($1, $2, $3);

-- name: advisory_lock
-- The two-key form keeps crmd's locks apart from the one-key locks that producers take per record.
SELECT pg_advisory_lock($1::integer, $2::integer);

-- name: try_advisory_lock
SELECT pg_try_advisory_lock($1::integer, $2::integer);

-- name: advisory_unlock
SELECT pg_advisory_unlock($1::integer, $2::integer);

-- name: ping
-- /readyz: the database answers.
SELECT 1;
