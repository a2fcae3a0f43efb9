-- Several requests granted in one call: the waiters queued for one account in an instance ask
-- together, so a busy account costs one lock of its windows per group, not per request. The tokens are granted in order, each as crm_budget_grant would, until one is refused:
-- `granted` is how many (the first ones), and the refusal's wait and pause come back with it.
CREATE FUNCTION crm_budget_grant_many(p_conta text, p_tokens uuid[], p_bulk boolean,
                                      p_hold float8,
                                      OUT granted integer, OUT wait float8,
                                      OUT pausada_ate timestamptz, OUT motivo text,
                                      OUT db_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    t uuid;
    one record;
BEGIN
    granted := 0;
    wait := 0;
    FOREACH t IN ARRAY p_tokens LOOP
        SELECT * INTO one FROM crm_budget_grant(p_conta, t, p_bulk, p_hold);
        IF NOT one.granted THEN
            wait := one.wait;
            pausada_ate := one.pausada_ate;
            motivo := one.motivo;
            EXIT;
        END IF;
        granted := granted + 1;
    END LOOP;
    db_ms := EXTRACT(EPOCH FROM clock_timestamp() - started) * 1000;
END;
$$;

-- The groups of several accounts (`p_sizes[i]` tokens of p_tokens for account p_contas[i]) in
-- one call: a process with hundreds of accounts asks for all those waiting at once, one round
-- trip instead of one per account. Accounts are granted in the order of their names, so two
-- instances that lock the same accounts' windows lock them in one order (never a deadlock).
CREATE FUNCTION crm_budget_grant_each(p_contas text[], p_sizes integer[], p_tokens uuid[],
                                      p_bulk boolean[], p_hold float8[])
RETURNS TABLE (pedido integer, granted integer, wait float8, pausada_ate timestamptz,
               motivo text, db_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    starts integer[] := '{}';
    at integer := 1;
    i integer;
    one record;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_contas, 1), 0) LOOP
        starts := starts || at;
        at := at + p_sizes[i];
    END LOOP;
    FOR i IN SELECT c.o FROM unnest(p_contas) WITH ORDINALITY AS c (conta, o) ORDER BY c.conta, c.o
    LOOP
        SELECT * INTO one FROM crm_budget_grant_many(
            p_contas[i], p_tokens[starts[i] : starts[i] + p_sizes[i] - 1], p_bulk[i], p_hold[i]);
        pedido := i;
        granted := one.granted;
        wait := one.wait;
        pausada_ate := one.pausada_ate;
        motivo := one.motivo;
        db_ms := one.db_ms;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Answers written in a group a moment after they came: each slot holds for the window's length
-- from its answer (`p_ages`: seconds between the answer and this call, on the sender's monotonic
-- clock), not from the write. Writing late then no longer holds a slot longer than the window,
-- and no grant is refused for a slot that is free in truth. The transaction's now() is a little
-- later than the moment the ages were taken: a slot errs on the long side, never the short.
CREATE FUNCTION crm_budget_release_answered(p_tokens uuid[], p_ages float8[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE crm_budget_slot s
       SET livre_em = now() + make_interval(secs => w.per_seconds + w.margin - t.age),
           token = NULL
      FROM unnest(p_tokens, p_ages) AS t (token, age), crm_budget_window w
     WHERE s.token = t.token AND w.conta = s.conta AND w.janela = s.janela;
$$;
