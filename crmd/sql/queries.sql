-- Every query crmd runs against its own tables, by name. Loaded once by crmd/sql.py.
-- Parameters are always bound ($1, $2, ...), never formatted into the text.

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

-- name: advisory_unlock
SELECT pg_advisory_unlock($1::integer, $2::integer);

-- name: enqueue
SELECT crm_enqueue($1, $2, $3, $4, $5);

-- name: enqueue_many
-- One statement for many items; the table's trigger still coalesces each one.
INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, acao)
SELECT * FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::smallint[], $5::text[]);

-- name: claim
-- Lease up to $1 due items, highest priority first, then oldest. SKIP LOCKED lets any number of
-- workers claim at once without waiting on (or taking) each other's rows. The inner scan reads
-- only the partial claim index. A record already in flight elsewhere (a live lease on another
-- item) is left alone, so two workers never send the same record at once. The attempt is
-- counted here: a worker that dies mid-call has still spent it.
WITH due AS (
    SELECT q.id
      FROM crm_sync_queue q
     WHERE q.estado IN ('pendente', 'processando')
       AND CASE q.estado WHEN 'pendente' THEN q.proxima_tentativa <= now()
                         ELSE q.lease_ate <= now() END
       AND NOT EXISTS (
            SELECT 1 FROM crm_sync_queue o
             WHERE o.estado = 'processando' AND o.lease_ate > now()
               AND o.entidade = q.entidade AND o.entidade_id = q.entidade_id
               AND o.loja_id = q.loja_id AND o.id <> q.id)
     ORDER BY q.prioridade DESC, q.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE crm_sync_queue q
   SET estado = 'processando',
       tentativas = q.tentativas + 1,
       lease_token = gen_random_uuid(),
       lease_ate = now() + make_interval(secs => $2),
       atualizado_em = now()
  FROM due
 WHERE q.id = due.id
RETURNING q.id, q.loja_id, q.entidade, q.entidade_id, q.acao, q.prioridade, q.tentativas,
          q.adiamentos, q.lease_token;

-- name: complete
UPDATE crm_sync_queue
   SET estado = 'concluido', lease_token = NULL, lease_ate = NULL, ultimo_erro = NULL,
       processado_em = now(), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: reschedule
-- A failed attempt that will be tried again after $3 seconds.
UPDATE crm_sync_queue
   SET estado = 'pendente', lease_token = NULL, lease_ate = NULL, ultimo_erro = $4,
       proxima_tentativa = now() + make_interval(secs => $3), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: fail
UPDATE crm_sync_queue
   SET estado = 'falhou', lease_token = NULL, lease_ate = NULL, ultimo_erro = $3,
       processado_em = now(), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: release
-- Give an item back without spending the attempt its claim counted (shutdown, a paused account,
-- a dependency that must go first).
UPDATE crm_sync_queue
   SET estado = 'pendente', lease_token = NULL, lease_ate = NULL,
       tentativas = GREATEST(tentativas - 1, 0),
       ultimo_erro = COALESCE($4, ultimo_erro),
       proxima_tentativa = now() + make_interval(secs => $3), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: defer
-- Like release, for an item waiting on a record it depends on; counted, so it cannot wait forever.
UPDATE crm_sync_queue
   SET estado = 'pendente', lease_token = NULL, lease_ate = NULL,
       tentativas = GREATEST(tentativas - 1, 0), adiamentos = adiamentos + 1, ultimo_erro = $4,
       proxima_tentativa = now() + make_interval(secs => $3), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: next_due_in
-- Seconds until the earliest pending item is due (negative when overdue), NULL when none waits.
-- (Not GREATEST(..., 0): GREATEST ignores NULLs and would turn "nothing pending" into 0.)
SELECT EXTRACT(EPOCH FROM min(proxima_tentativa) - now())::float8
  FROM crm_sync_queue
 WHERE estado = 'pendente';

-- name: map_for_batch
SELECT entidade_id, external_id, payload_hash
  FROM crm_sync_map
 WHERE conta = $1 AND entidade = $2 AND entidade_id = ANY($3::bigint[]);

-- name: map_resolve
SELECT m.entidade, m.entidade_id, m.external_id
  FROM crm_sync_map m
  JOIN unnest($2::text[], $3::bigint[]) AS want (entidade, entidade_id)
    ON m.entidade = want.entidade AND m.entidade_id = want.entidade_id
 WHERE m.conta = $1;

-- name: map_upsert
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
   SET external_id = EXCLUDED.external_id, payload_hash = EXCLUDED.payload_hash,
       sincronizado_em = now();

-- name: map_delete
DELETE FROM crm_sync_map WHERE conta = $1 AND entidade = $2 AND entidade_id = $3;

-- name: log_insert
INSERT INTO crm_sync_log (queue_id, conta, loja_id, entidade, entidade_id, acao, tentativa,
                          status, http_status, mensagem, external_id, requisicoes, duracao_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: requests_sent_since
-- When this account's recent requests were sent, from the log: the limiter starts from them, so
-- a restart cannot spend the daily budget twice. Each row stands for `requisicoes` requests.
SELECT EXTRACT(EPOCH FROM criado_em)::float8 AS at, requisicoes
  FROM crm_sync_log
 WHERE conta = $1 AND requisicoes > 0 AND criado_em > now() - make_interval(secs => $2)
 ORDER BY criado_em;
