-- What the operator surface reads (crmd/store/reports.py): status, metrics, the summary line,
-- failed items, and the budget already spent. Each reads a small partial index, so it answers in
-- milliseconds however many finished rows the queue and the log hold.

-- name: queue_depth
-- Open, failed and ignored items per state and entity, with the oldest creation time: an
-- index-only scan of crm_sync_queue_ops_idx (0006_old_system.sql). Done items are not counted;
-- they are most of the table and nobody needs their number in a hurry. Ignored ones stay until
-- the cleanup removes them with the done ones.
SELECT estado, entidade, count(*) AS n, min(criado_em) AS oldest,
       EXTRACT(EPOCH FROM now() - min(criado_em))::float8 AS oldest_age
  FROM crm_sync_queue
 WHERE estado IN ('pendente', 'processando', 'falhou', 'ignorado')
 GROUP BY estado, entidade;

-- name: log_rates
-- Attempts and successes over the last 24 h and the last hour, through the log's criado_em index;
-- and the server's clock, which every age shown is measured against. Ignored items and the
-- lookups of `crmd plan --lookups` (acao 'consulta') are no attempts to send: counted apart.
SELECT now() AS now,
       count(*) FILTER (WHERE sent) AS attempts_24h,
       count(*) FILTER (WHERE sent AND status = 'sucesso') AS succeeded_24h,
       count(*) FILTER (WHERE status = 'ignorado') AS ignored_24h,
       count(*) FILTER (WHERE sent AND criado_em > now() - interval '1 hour') AS attempts_1h,
       count(*) FILTER (WHERE sent AND status = 'sucesso'
                          AND criado_em > now() - interval '1 hour') AS succeeded_1h
  FROM (SELECT status, criado_em, status <> 'ignorado' AND acao <> 'consulta' AS sent
          FROM crm_sync_log
         WHERE criado_em > now() - interval '24 hours') AS l;

-- name: last_errors
-- Newest first, from the partial index on errors (0002_ops.sql).
SELECT id, criado_em, queue_id, conta, loja_id, entidade, entidade_id, acao, tentativa,
       http_status, mensagem
  FROM crm_sync_log
 WHERE status = 'erro'
 ORDER BY criado_em DESC, id DESC
 LIMIT $1;

-- name: failed_items
SELECT id, loja_id, entidade, entidade_id, acao, prioridade, tentativas, ultimo_erro, criado_em,
       processado_em
  FROM crm_sync_queue
 WHERE estado = 'falhou' AND ($1::text IS NULL OR entidade = $1::text)
 ORDER BY processado_em DESC NULLS LAST, id DESC
 LIMIT $2;

-- name: pending_count
SELECT count(*) FROM crm_sync_queue WHERE estado = 'pendente';

-- name: requests_sent_since
-- When this account's recent requests were sent, from the log: the limiter starts from them, so
-- a restart cannot spend the daily budget twice. Each row stands for `requisicoes` requests.
SELECT EXTRACT(EPOCH FROM criado_em)::float8 AS at, requisicoes
  FROM crm_sync_log
 WHERE conta = $1 AND requisicoes > 0 AND criado_em > now() - make_interval(secs => $2)
 ORDER BY criado_em;
