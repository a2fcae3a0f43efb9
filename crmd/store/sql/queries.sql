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

-- name: bulk_mode_on
-- crmd's own bulk inserts coalesce with ON CONFLICT themselves; the row trigger stands aside.
SELECT set_config('crmd.inner_insert', 'on', true);

-- name: bulk_mode_off
SELECT set_config('crmd.inner_insert', 'off', true), pg_notify('crm_sync', '');

-- name: enqueue_many
-- One statement for many items. Duplicates within the call are folded first (ON CONFLICT may
-- touch a row only once per statement): highest priority, last action given. Returns one row
-- per record, `novo` when it made a new item rather than merging into a pending one.
INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, acao)
SELECT loja_id, entidade, entidade_id, max(prioridade),
       (array_agg(acao ORDER BY ord DESC))[1]
  FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::smallint[], $5::text[])
       WITH ORDINALITY AS t (loja_id, entidade, entidade_id, prioridade, acao, ord)
 GROUP BY loja_id, entidade, entidade_id
ON CONFLICT (entidade, entidade_id, loja_id) WHERE estado = 'pendente' DO UPDATE
   SET prioridade = GREATEST(crm_sync_queue.prioridade, EXCLUDED.prioridade),
       acao = EXCLUDED.acao,
       atualizado_em = now()
RETURNING (xmax = 0) AS novo;

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
SELECT crm_sync_requeue($1, $2, $3, $4, false, false);

-- name: fail
UPDATE crm_sync_queue
   SET estado = 'falhou', lease_token = NULL, lease_ate = NULL, ultimo_erro = $3,
       processado_em = now(), atualizado_em = now()
 WHERE id = $1 AND lease_token = $2 AND estado = 'processando';

-- name: release
-- Give an item back without spending the attempt its claim counted (shutdown, a paused account).
SELECT crm_sync_requeue($1, $2, $3, $4, true, false);

-- name: defer
-- Like release, for an item waiting on a record it depends on; counted, so it cannot wait forever.
SELECT crm_sync_requeue($1, $2, $3, $4, true, true);

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
 WHERE m.conta = $1 AND m.external_id IS NOT NULL;

-- name: map_creating
-- Committed before a POST: if we die before storing the new id, the next attempt knows a record
-- may already exist and looks it up instead of creating a duplicate.
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
VALUES ($1, $2, $3, NULL, NULL)
ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
   SET external_id = NULL, payload_hash = NULL, sincronizado_em = now();

-- name: settle_many
-- Attempts' outcomes (CRM id, log row, queue state; see crm_sync_settle), any number in one
-- statement: one array per argument, one result row per outcome, in the order given.
SELECT crm_sync_settle(t.id, t.token, t.conta, t.loja_id, t.entidade, t.entidade_id, t.acao,
                       t.tentativa, t.mapa, t.external_id, t.hash, t.status, t.http_status,
                       t.mensagem, t.requisicoes, t.duracao_ms, t.estado, t.delay) AS ok
  FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::integer[], $5::text[], $6::bigint[],
              $7::text[], $8::integer[], $9::text[], $10::text[], $11::text[], $12::text[],
              $13::integer[], $14::text[], $15::integer[], $16::integer[], $17::text[],
              $18::float8[])
       WITH ORDINALITY AS t (id, token, conta, loja_id, entidade, entidade_id, acao, tentativa,
                             mapa, external_id, hash, status, http_status, mensagem,
                             requisicoes, duracao_ms, estado, delay, ord)
 ORDER BY t.ord;

-- name: requests_sent_since
-- When this account's recent requests were sent, from the log: the limiter starts from them, so
-- a restart cannot spend the daily budget twice. Each row stands for `requisicoes` requests.
SELECT EXTRACT(EPOCH FROM criado_em)::float8 AS at, requisicoes
  FROM crm_sync_log
 WHERE conta = $1 AND requisicoes > 0 AND criado_em > now() - make_interval(secs => $2)
 ORDER BY criado_em;

-- name: try_advisory_lock
SELECT pg_try_advisory_lock($1::integer, $2::integer);

-- name: timer_runs
SELECT nome, ultima_execucao, executado_em, duracao_ms, resultado FROM crm_sync_timer;

-- name: timer_last
SELECT ultima_execucao FROM crm_sync_timer WHERE nome = $1;

-- name: timer_start
-- A timer seen for the first time counts from now: nothing before it was missed.
INSERT INTO crm_sync_timer (nome, ultima_execucao) VALUES ($1, $2) ON CONFLICT (nome) DO NOTHING;

-- name: timer_done
UPDATE crm_sync_timer
   SET ultima_execucao = $2, executado_em = now(), duracao_ms = $3, resultado = $4
 WHERE nome = $1;

-- name: pending_count
SELECT count(*) FROM crm_sync_queue WHERE estado = 'pendente';
