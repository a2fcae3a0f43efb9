-- The operator surface's queries (crmd/ops.py): enqueue in bulk, status, failed items, retry and
-- cleanup. Loaded once by crmd/sql.py. Parameters are always bound ($1, $2, ...).

-- name: ping
-- /readyz: the database answers.
SELECT 1;

-- name: lojas_existing
SELECT id FROM lojas WHERE id = ANY($1::integer[]) ORDER BY id;

-- name: lojas_all
SELECT id FROM lojas ORDER BY id;

-- Sources for `crmd enqueue`: the next $2 records after id $1, in id order (keyset chunks, so
-- each statement is short and progress can be shown). $3: lojas (NULL: every loja). $4: days
-- (NULL: no date filter) - for clientes and produtos the last change, for vendas and atividades
-- their date. Each returns (loja_id, entidade, entidade_id).

-- name: source_clientes
SELECT loja_id, 'clientes'::text AS entidade, id AS entidade_id
  FROM clientes
 WHERE id > $1 AND ativo AND deleted_at IS NULL
   AND ($3::integer[] IS NULL OR loja_id = ANY($3::integer[]))
   AND ($4::integer IS NULL OR updated_at >= now() - make_interval(days => $4::integer))
 ORDER BY id
 LIMIT $2

-- name: source_produtos
SELECT loja_id, 'produtos'::text AS entidade, id AS entidade_id
  FROM produtos
 WHERE id > $1 AND ativo AND deleted_at IS NULL
   AND ($3::integer[] IS NULL OR loja_id = ANY($3::integer[]))
   AND ($4::integer IS NULL OR updated_at >= now() - make_interval(days => $4::integer))
 ORDER BY id
 LIMIT $2

-- name: source_vendas
SELECT loja_id, 'vendas'::text AS entidade, id AS entidade_id
  FROM vendas
 WHERE id > $1 AND deleted_at IS NULL
   AND ($3::integer[] IS NULL OR loja_id = ANY($3::integer[]))
   AND ($4::integer IS NULL OR data >= current_date - $4::integer)
 ORDER BY id
 LIMIT $2

-- name: source_atividades
SELECT loja_id, 'atividades'::text AS entidade, id AS entidade_id
  FROM atividades
 WHERE id > $1 AND deleted_at IS NULL
   AND ($3::integer[] IS NULL OR loja_id = ANY($3::integer[]))
   AND ($4::integer IS NULL OR data >= now() - make_interval(days => $4::integer))
 ORDER BY id
 LIMIT $2

-- name: enqueue_selected
-- The one bulk path into the queue: the records a source_* query above selects go in at priority
-- $5. crmd/ops.py splices the source query into the marked spot (only those constant queries,
-- never input) and runs this in bulk mode (the row trigger stands aside): ON CONFLICT on the
-- unique index of pending items coalesces instead, so a record already waiting keeps its one
-- item, at the higher priority; one that would not change is left unwritten (a second full sync
-- of a waiting queue costs reads, not a million row versions). Returns, per loja, the records
-- found, the items created (xmax is 0 only on a freshly inserted row) and the last id seen
-- (where the next chunk starts).
WITH src AS MATERIALIZED (
    /*source*/
), ins AS (
    INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, acao)
    SELECT loja_id, entidade, entidade_id, $5::smallint, 'upsert' FROM src
    ON CONFLICT (entidade, entidade_id, loja_id) WHERE estado = 'pendente' DO UPDATE
       SET prioridade = GREATEST(crm_sync_queue.prioridade, EXCLUDED.prioridade),
           acao = EXCLUDED.acao,
           atualizado_em = now()
     WHERE crm_sync_queue.prioridade < EXCLUDED.prioridade
        OR crm_sync_queue.acao <> EXCLUDED.acao
    RETURNING loja_id, (xmax = 0) AS novo
), created AS (
    SELECT loja_id, count(*) FILTER (WHERE novo) AS n FROM ins GROUP BY loja_id
)
SELECT s.loja_id, count(*) AS found, coalesce(max(c.n), 0) AS created,
       max(s.entidade_id) AS last_id
  FROM src s
  LEFT JOIN created c USING (loja_id)
 GROUP BY s.loja_id;

-- name: queue_depth
-- Open and failed items per state and entity, with the oldest creation time: an index-only scan
-- of crm_sync_queue_ops_idx (0002_ops.sql). Done items are not counted; they are most of the
-- table and nobody needs their number in a hurry.
SELECT estado, entidade, count(*) AS n, min(criado_em) AS oldest,
       EXTRACT(EPOCH FROM now() - min(criado_em))::float8 AS oldest_age
  FROM crm_sync_queue
 WHERE estado IN ('pendente', 'processando', 'falhou')
 GROUP BY estado, entidade;

-- name: log_rates
-- Attempts and successes over the last 24 h and the last hour, through the log's criado_em index;
-- and the server's clock, which every age shown is measured against.
SELECT now() AS now,
       count(*) AS attempts_24h,
       count(*) FILTER (WHERE status = 'sucesso') AS succeeded_24h,
       count(*) FILTER (WHERE criado_em > now() - interval '1 hour') AS attempts_1h,
       count(*) FILTER (WHERE status = 'sucesso' AND criado_em > now() - interval '1 hour')
           AS succeeded_1h
  FROM crm_sync_log
 WHERE criado_em > now() - interval '24 hours';

-- name: last_errors
-- Newest first, from the partial index on errors (0002_ops.sql).
SELECT id, criado_em, queue_id, conta, loja_id, entidade, entidade_id, acao, tentativa,
       http_status, mensagem
  FROM crm_sync_log
 WHERE status = 'erro'
 ORDER BY criado_em DESC, id DESC
 LIMIT $1;

-- name: failed
SELECT id, loja_id, entidade, entidade_id, acao, prioridade, tentativas, ultimo_erro, criado_em,
       processado_em
  FROM crm_sync_queue
 WHERE estado = 'falhou' AND ($1::text IS NULL OR entidade = $1::text)
 ORDER BY processado_em DESC NULLS LAST, id DESC
 LIMIT $2;

-- name: retry
-- Failed items back to pending with fresh attempts, due now. $1: ids, $2: entidade (NULL: no
-- filter; the caller always sets one or asks for all). A record keeps at most one pending item:
-- when it already waits in the queue, or several of its items failed, the extra failed items are
-- folded into the one that goes on (which takes the highest priority among them) and deleted; the
-- log keeps their attempts. Row locks (FOR UPDATE) stop a concurrent retry or cleanup from
-- touching the same failed rows.
WITH target AS (
    SELECT id, loja_id, entidade, entidade_id, prioridade
      FROM crm_sync_queue
     WHERE estado = 'falhou'
       AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
       AND ($2::text IS NULL OR entidade = $2::text)
       FOR UPDATE
), per_record AS (
    SELECT loja_id, entidade, entidade_id, max(id) AS newest, max(prioridade) AS prioridade
      FROM target
     GROUP BY loja_id, entidade, entidade_id
), waiting AS (
    SELECT DISTINCT ON (q.loja_id, q.entidade, q.entidade_id)
           q.id, q.loja_id, q.entidade, q.entidade_id, r.prioridade
      FROM crm_sync_queue q
      JOIN per_record r USING (loja_id, entidade, entidade_id)
     WHERE q.estado = 'pendente'
     ORDER BY q.loja_id, q.entidade, q.entidade_id, q.id
), raised AS (
    UPDATE crm_sync_queue q
       SET prioridade = GREATEST(q.prioridade, w.prioridade), atualizado_em = now()
      FROM waiting w
     WHERE q.id = w.id
    RETURNING q.id
), revived AS (
    UPDATE crm_sync_queue q
       SET estado = 'pendente', tentativas = 0, adiamentos = 0, prioridade = r.prioridade,
           proxima_tentativa = now(), processado_em = NULL, atualizado_em = now()
      FROM per_record r
     WHERE q.id = r.newest
       AND NOT EXISTS (SELECT 1 FROM waiting w
                        WHERE w.loja_id = r.loja_id AND w.entidade = r.entidade
                          AND w.entidade_id = r.entidade_id)
    RETURNING q.id
), folded AS (
    DELETE FROM crm_sync_queue q
     USING target t
     WHERE q.id = t.id AND q.id NOT IN (SELECT id FROM revived)
    RETURNING q.id
)
SELECT (SELECT count(*) FROM revived) AS revived,
       (SELECT count(*) FROM folded) AS folded,
       (SELECT count(*) FROM raised) AS raised;

-- name: wake_workers
-- The trigger notifies on INSERT only; an UPDATE back to pending must say so itself (at commit).
SELECT pg_notify('crm_sync', '');

-- name: cleanup_cutoffs
SELECT now() - make_interval(days => $1::integer) AS log_before,
       now() - make_interval(days => $2::integer) AS queue_before;

-- name: cleanup_log_count
SELECT count(*) FROM crm_sync_log WHERE criado_em < $1;

-- name: cleanup_log_batch
-- At most $2 rows per statement (each its own transaction), oldest first through the criado_em
-- index, so a large backlog never holds locks or one long transaction.
DELETE FROM crm_sync_log
 WHERE id IN (SELECT id FROM crm_sync_log WHERE criado_em < $1 ORDER BY criado_em LIMIT $2);

-- name: cleanup_queue_count
SELECT count(*) FROM crm_sync_queue WHERE estado = 'concluido' AND processado_em < $1;

-- name: cleanup_queue_batch
-- Done items only (failed ones wait for a person), by processado_em through the partial index
-- crm_sync_queue_done_idx; batched like the log.
DELETE FROM crm_sync_queue
 WHERE id IN (SELECT id FROM crm_sync_queue
               WHERE estado = 'concluido' AND processado_em < $1
               ORDER BY processado_em
               LIMIT $2);
