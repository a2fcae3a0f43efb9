-- The in-process timers' runs, shared by every crmd instance: a scheduled run happens once,
-- however many instances run and however often they restart (see crmd/timers.py).
CREATE TABLE crm_sync_timer (
    nome            text        PRIMARY KEY,
    -- The scheduled time of the last run (not when it ran): the next one follows from it.
    ultima_execucao timestamptz NOT NULL,
    executado_em    timestamptz,
    duracao_ms      integer,
    resultado       text
);
