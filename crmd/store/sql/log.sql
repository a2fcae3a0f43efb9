-- crm_sync_log rows written outside the settle path (crmd/store/log.py).

-- name: log_lookups
-- The lookups `crmd plan --lookups` sent, one row each (acao 'consulta', attempt 0, no queue
-- item): every request counts against the account's daily budget, which is read back from this
-- table, and the operator surface counts them apart from the attempts to send.
INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa, status,
                          http_status, mensagem, external_id, requisicoes, duracao_ms)
SELECT conta, loja_id, entidade, entidade_id, 'consulta', 0, status, http_status, mensagem,
       external_id, requisicoes, duracao_ms
  FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::text[], $6::integer[],
              $7::text[], $8::text[], $9::integer[], $10::integer[])
       AS l (conta, loja_id, entidade, entidade_id, status, http_status, mensagem, external_id,
             requisicoes, duracao_ms);
