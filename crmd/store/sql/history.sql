-- What the operator surface reads of one record and of the last day (crmd/store/history.py):
-- a record's attempts with their HTTP exchanges, its open queue items and CRM ids; requests per
-- minute and the queue's depth over 24 h for the dashboard's chart; the pace and budget behind
-- "fila esvazia em"; the successes of today.

-- name: record_attempts
-- Newest first, through crm_sync_log_registro_idx (0007_history.sql). $3: a loja, or NULL.
SELECT id, criado_em, queue_id, conta, loja_id, acao, tentativa, status, http_status, mensagem,
       external_id, requisicoes, duracao_ms, trocas
  FROM crm_sync_log
 WHERE entidade = $1 AND entidade_id = $2 AND ($3::integer IS NULL OR loja_id = $3::integer)
 ORDER BY criado_em DESC, id DESC
 LIMIT $4;

-- name: record_open_items
-- The record's items that are not done, one branch per partial index (pending, in flight,
-- failed), so none of them walks the queue's done rows.
SELECT id, loja_id, acao, estado, prioridade, tentativas, ultimo_erro, criado_em,
       proxima_tentativa, processado_em
  FROM crm_sync_queue
 WHERE estado = 'pendente' AND entidade = $1 AND entidade_id = $2
UNION ALL
SELECT id, loja_id, acao, estado, prioridade, tentativas, ultimo_erro, criado_em,
       proxima_tentativa, processado_em
  FROM crm_sync_queue
 WHERE estado = 'processando' AND entidade = $1 AND entidade_id = $2
UNION ALL
SELECT id, loja_id, acao, estado, prioridade, tentativas, ultimo_erro, criado_em,
       proxima_tentativa, processado_em
  FROM crm_sync_queue
 WHERE estado = 'falhou' AND entidade = $1 AND entidade_id = $2
 ORDER BY id DESC;

-- name: record_links
-- Which CRM record it is in each account ($3: the account names, so the primary key is used).
SELECT conta, external_id, chave, sincronizado_em
  FROM crm_sync_map
 WHERE conta = ANY($3::text[]) AND entidade = $1 AND entidade_id = $2
 ORDER BY conta;

-- name: requests_per_minute
-- Requests sent per account and minute over the last $1 seconds, from the log (each row stands
-- for `requisicoes` requests), through crm_sync_log_conta_idx (0001_queue.sql).
SELECT conta, date_trunc('minute', criado_em) AS minuto, sum(requisicoes)::bigint AS n
  FROM crm_sync_log
 WHERE requisicoes > 0 AND criado_em > now() - make_interval(secs => $1)
 GROUP BY conta, minuto
 ORDER BY minuto;

-- name: depth_samples
SELECT minuto, pendentes, processando, falhas
  FROM crm_sync_amostra
 WHERE minuto > now() - make_interval(secs => $1)
 ORDER BY minuto;

-- name: record_depth_sample
-- This minute's depth, once whoever comes first (several daemons may run); samples older than
-- 8 days go at the same time.
WITH depth AS (
    SELECT count(*) FILTER (WHERE estado = 'pendente') AS pendentes,
           count(*) FILTER (WHERE estado = 'processando') AS processando,
           count(*) FILTER (WHERE estado = 'falhou') AS falhas
      FROM crm_sync_queue
     WHERE estado IN ('pendente', 'processando', 'falhou')
), old AS (
    DELETE FROM crm_sync_amostra WHERE minuto < now() - interval '8 days'
)
INSERT INTO crm_sync_amostra (minuto, pendentes, processando, falhas)
SELECT date_trunc('minute', now()), pendentes, processando, falhas FROM depth
ON CONFLICT (minuto) DO NOTHING;

-- name: recent_pace
-- Per account over the last $1 seconds: requests sent, records done and the seconds since the
-- first of them, the pace the estimate of when the queue is empty starts from.
SELECT conta, coalesce(sum(requisicoes), 0)::bigint AS requests,
       count(*) FILTER (WHERE status = 'sucesso') AS succeeded,
       EXTRACT(EPOCH FROM now() - min(criado_em))::float8 AS span
  FROM crm_sync_log
 WHERE criado_em > now() - make_interval(secs => $1)
 GROUP BY conta;

-- name: open_by_loja
-- Items waiting or in flight per loja, to share the backlog out among accounts of their own.
SELECT loja_id, count(*) AS n
  FROM crm_sync_queue
 WHERE estado IN ('pendente', 'processando')
 GROUP BY loja_id;

-- name: succeeded_since
-- Successes since $1 (the start of today in [schedule] timezone).
SELECT count(*) FROM crm_sync_log WHERE status = 'sucesso' AND criado_em >= $1;
