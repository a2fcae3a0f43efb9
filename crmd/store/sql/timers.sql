-- The in-process timers' runs, shared by every instance (crmd/store/timers.py).

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
