-- The outbox queue, crm_sync_queue: claiming, settling outcomes, bulk enqueue, retry of failed
-- items (crmd/store/queue.py). Parameters are always bound ($1, $2, ...), never formatted in.

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

-- name: enqueue_listed
-- The bulk path into the queue of `crmd enqueue` and the full sync: the ERP records a listing
-- query (crmd/store/sql/erp.sql, or [sources] <entidade>_enqueue) names go in at priority $5 as
-- entity $6. crmd/store/queue.py splices that query (configuration, never request input) into
-- the marked spot and reads it in keyset chunks: ids after $1, at most $2, lojas $3 (NULL:
-- every loja), dated within $4 days (NULL: no date filter). PostgreSQL flattens the spliced
-- query, so the id order and the limit come from the ERP table's primary key index. Runs in bulk
-- mode (the row trigger stands aside): ON CONFLICT on the unique index of pending items
-- coalesces instead, so a record already waiting keeps its one item, at the higher priority; one
-- that would not change is left unwritten (a second full sync of a waiting queue costs reads,
-- not a million row versions). Returns, per loja, the records found, the items created (xmax is
-- 0 only on a freshly inserted row) and the last id seen (where the next chunk starts).
WITH src AS MATERIALIZED (
    SELECT s.loja_id::integer AS loja_id, s.id::bigint AS entidade_id
      FROM (
/*listing*/
           ) AS s
     WHERE s.id > $1::bigint
       AND ($3::integer[] IS NULL OR s.loja_id = ANY($3::integer[]))
       AND ($4::integer IS NULL OR s.data >= current_date - $4::integer)
     ORDER BY s.id
     LIMIT $2
), ins AS (
    INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, acao)
    SELECT loja_id, $6::text, entidade_id, $5::smallint, 'upsert' FROM src
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

-- name: claim
-- Lease up to $1 due items, highest priority first, then oldest. SKIP LOCKED lets any number of
-- workers claim at once without waiting on (or taking) each other's rows. The inner scan reads
-- only the partial claim index. A record with another item in flight is left alone, whatever
-- that item's lease says: an expired lease is claimed again itself (the record's newer pending
-- item waits for it), so two workers never send one record at once, not even after a crash.
-- The attempt is counted here: a worker that dies mid-call has still spent it.
WITH due AS (
    SELECT q.id
      FROM crm_sync_queue q
     WHERE q.estado IN ('pendente', 'processando')
       AND CASE q.estado WHEN 'pendente' THEN q.proxima_tentativa <= now()
                         ELSE q.lease_ate <= now() END
       AND NOT EXISTS (
            SELECT 1 FROM crm_sync_queue o
             WHERE o.estado = 'processando'
               AND o.entidade = q.entidade AND o.entidade_id = q.entidade_id
               AND o.loja_id = q.loja_id AND o.id <> q.id)
     ORDER BY q.prioridade DESC, q.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE crm_sync_queue q
   SET estado = 'processando',
       lease_token = gen_random_uuid(),
       lease_ate = now() + make_interval(secs => $2),
       atualizado_em = now()
  FROM due
 WHERE q.id = due.id
RETURNING q.id, q.loja_id, q.entidade, q.entidade_id, q.acao, q.prioridade,
          q.tentativas + 1 AS tentativas, q.adiamentos, q.lease_token;

-- name: start
-- Workers have started on these items (ids $1, lease tokens $2): each spends an attempt, so a
-- process that dies while sending one has spent it, and one killed every time ends failed.
UPDATE crm_sync_queue q
   SET tentativas = q.tentativas + 1
  FROM unnest($1::bigint[], $2::uuid[]) AS started (id, token)
 WHERE q.id = started.id AND q.lease_token = started.token AND q.estado = 'processando';

-- name: settle
-- Outcomes of claimed items, any number in one statement (atomic, one round trip): an array of
-- crm_sync_outcome, one result per outcome in the same order: 'ok', 'stale' (the lease token was
-- stale) or 'twin' (see crm_sync_settle_v2 in migrations/core/0005_settle_v2.sql).
SELECT crm_sync_settle_v2($1::crm_sync_outcome[]);

-- name: extend_leases
-- The heartbeat of items a worker still holds (buffered, waiting for the rate limiter, in
-- flight): their leases run on from now. Returns the ids still held; one missing lost its lease.
UPDATE crm_sync_queue q
   SET lease_ate = now() + make_interval(secs => $3)
  FROM unnest($1::bigint[], $2::uuid[]) AS held (id, token)
 WHERE q.id = held.id AND q.lease_token = held.token AND q.estado = 'processando'
RETURNING q.id;

-- name: failed_records
-- Of these records (entidade $1[i], id $2[i]), those whose newest item failed for good and none
-- waits or is in flight: a venda waiting on one of them would wait for nothing.
SELECT DISTINCT ON (q.entidade, q.entidade_id) q.entidade, q.entidade_id, q.ultimo_erro
  FROM crm_sync_queue q
  JOIN unnest($1::text[], $2::bigint[]) AS want (entidade, entidade_id)
    ON q.entidade = want.entidade AND q.entidade_id = want.entidade_id
 WHERE q.estado = 'falhou'
   AND NOT EXISTS (SELECT 1 FROM crm_sync_queue o
                    WHERE o.estado IN ('pendente', 'processando')
                      AND o.entidade = q.entidade AND o.entidade_id = q.entidade_id)
 ORDER BY q.entidade, q.entidade_id, q.id DESC;

-- name: next_due_in
-- Seconds until the earliest item is due (negative when overdue), NULL when none waits: a pending
-- item's next attempt, or an item in flight whose lease runs out (a vanished instance's, to be
-- claimed again at once). (Not GREATEST(..., 0): GREATEST ignores NULLs and would turn "nothing
-- pending" into 0.)
SELECT EXTRACT(EPOCH FROM LEAST(
           (SELECT min(proxima_tentativa) FROM crm_sync_queue WHERE estado = 'pendente'),
           (SELECT min(lease_ate) FROM crm_sync_queue WHERE estado = 'processando')
       ) - now())::float8;

-- name: retry_failed
-- Failed items back to pending with fresh attempts, due now. $1: ids, $2: entidade (NULL: no
-- filter; the caller always sets one or asks for all). A record keeps at most one pending item:
-- when it already waits in the queue, or several of its items failed, the extra failed items are
-- folded into the one that goes on (which takes the highest priority among them) and deleted; the
-- log keeps their attempts. A create in doubt of the record (a marker without a CRM id) is
-- forgotten: asking for a retry says a person has checked the CRM. Row locks (FOR UPDATE) stop a
-- concurrent retry or cleanup from touching the same failed rows.
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
), checked AS (
    DELETE FROM crm_sync_map m
     USING per_record r
     WHERE m.entidade = r.entidade AND m.entidade_id = r.entidade_id AND m.external_id IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM revived) AS revived,
       (SELECT count(*) FROM folded) AS folded,
       (SELECT count(*) FROM raised) AS raised,
       (SELECT count(*) FROM checked) AS checked;

-- name: wake_workers
-- The trigger notifies on INSERT only; an UPDATE back to pending must say so itself (at commit).
SELECT pg_notify('crm_sync', '');

-- name: plan_pending
-- `crmd plan`: the open items (pending, or in flight now), in id order after $1, at most $2, of
-- entity $3 and lojas $4 (NULL: any). Reads only the claim index's rows.
SELECT id, loja_id, entidade, entidade_id, acao
  FROM crm_sync_queue
 WHERE estado IN ('pendente', 'processando') AND id > $1::bigint
   AND ($3::text IS NULL OR entidade = $3::text)
   AND ($4::integer[] IS NULL OR loja_id = ANY($4::integer[]))
 ORDER BY id
 LIMIT $2;
