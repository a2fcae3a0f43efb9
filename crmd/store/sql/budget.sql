-- The shared request budget of the CRM accounts and the registry of instances
-- (crmd/store/budget.py, crmd/store/instances.py; the functions in migrations/core/0008-0011).

-- name: budget_configure
SELECT crm_budget_configure($1, $2::integer[], $3::float8[], $4, $5);

-- name: budget_grant
-- Groups of requests of several accounts: $2 holds how many of the tokens $3 each group has;
-- slots free within $6 seconds may be granted, `ready` saying how long each must still wait
-- (and `freed_by`, `freed_lead`, `ready_rest` what it waits for: migration 0011).
SELECT pedido, granted, wait, ready, pausada_ate, motivo, db_ms, freed_by, freed_lead,
       ready_rest
  FROM crm_budget_grant_each($1::text[], $2::integer[], $3::uuid[], $4::boolean[],
                             $5::float8[], $6::float8);

-- name: budget_release
-- Requests answered $2 seconds ago (tokens $1).
SELECT crm_budget_release_answered($1::uuid[], $2::float8[]);

-- name: budget_renew
-- Requests still out (tokens $1) keep their slots $2 seconds more, plus the window's length.
SELECT crm_budget_renew($1::uuid[], $2::float8);

-- name: budget_pause
-- A pause seen by every instance; a longer one wins, a shorter one changes nothing.
INSERT INTO crm_account_state AS s (conta, pausada_ate, motivo)
VALUES ($1, now() + make_interval(secs => $2), $3)
ON CONFLICT (conta) DO UPDATE
   SET pausada_ate = EXCLUDED.pausada_ate, motivo = EXCLUDED.motivo, atualizado_em = now()
 WHERE s.pausada_ate IS NULL OR s.pausada_ate < EXCLUDED.pausada_ate;

-- name: budget_usage
-- Slots held now, per window of the account (for status and metrics, not the hot path).
SELECT w.janela, w.requests, w.per_seconds,
       (SELECT count(*) FROM crm_budget_slot s
         WHERE s.conta = w.conta AND s.janela = w.janela AND s.livre_em > now()) AS used
  FROM crm_budget_window w
 WHERE w.conta = $1
 ORDER BY w.janela;

-- name: budget_paused
SELECT conta, pausada_ate, motivo FROM crm_account_state WHERE pausada_ate > now();

-- name: instance_register
INSERT INTO crm_instance (id, host, pid, versao) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET visto_em = now();

-- name: instance_heartbeat
-- The instance is alive; instances not seen for a day are forgotten.
WITH gone AS (DELETE FROM crm_instance WHERE visto_em < now() - interval '1 day')
UPDATE crm_instance SET visto_em = now() WHERE id = $1;

-- name: instance_unregister
DELETE FROM crm_instance WHERE id = $1;

-- name: instances
SELECT id, host, pid, versao, iniciado_em, visto_em,
       EXTRACT(EPOCH FROM now() - visto_em)::float8 AS silent_seconds
  FROM crm_instance
 ORDER BY iniciado_em;

-- name: budget_usage_all
-- Slots held now, per account and window (status, metrics).
SELECT w.conta, w.janela, w.requests, w.per_seconds,
       (SELECT count(*) FROM crm_budget_slot s
         WHERE s.conta = w.conta AND s.janela = w.janela AND s.livre_em > now()) AS used
  FROM crm_budget_window w
 ORDER BY w.conta, w.janela;
