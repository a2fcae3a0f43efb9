-- A slot freed by this instance's own answer is timed by this instance's clock. A grant ahead
-- (0010) says how long its request must still wait, from the database's now; the sender can
-- only count that from when the answer reached it, later by the reply's way back and the wait
-- of both event loops (25-30 ms on a loaded machine, a slot's whole cycle longer each time:
-- 200 accounts at 3/s reached 93 % of their budget). The slot is its own: the request whose
-- answer freed it was sent from here, and this process knows to the microsecond when that
-- answer came. So a grant now also says which request's answer frees the slot it waits for
-- (`freed_by`, from the slot's new column `anterior`), how long after that answer
-- (`freed_lead`: the window's length), and the wait of its other windows (`ready_rest`); the
-- sender that knows `freed_by` times the request from its own answer, any other as before.
-- Safe both ways: the slot's previous request is answered a window before this one leaves, by
-- the clock that saw the answer; a slot freed by another instance, by a timeout or by a rebuild
-- has no `anterior` the sender knows, and waits from its reply as before.
--
-- Every function that sets `livre_em` is replaced here, so an instance of the previous version
-- on the same database calls these (its columns are a subset of theirs): the answers set
-- `anterior`, the grants clear it (a slot whose holder never answers frees itself by its hold,
-- and must not be timed from an older answer).

ALTER TABLE crm_budget_slot ADD COLUMN anterior uuid;  -- the request whose answer set livre_em

-- Answers and renewals find their slots through the token index, whatever the table's size.
--
-- The slot table starts empty and grows by a row per request of every daily window (up to its
-- limit: 30,000 per GestãoClick account), and every answer and grant rewrites a row of it. The
-- answers joined the slots to their tokens (`s.token = t.token` over unnest): a join clause, which
-- cannot use the partial index on `token` (its predicate, token IS NOT NULL, is proven only by
-- a condition on the table alone), and a plan cached while the table was small. So each group of
-- answers read the whole table: with 200 accounts at 3/s, 50 scans a second, 1.4 million rows a
-- second after a minute, and more as the day fills. Now the tokens are also a condition of their
-- own (`s.token = ANY(p_tokens)`), which the index serves, and these functions are planned for
-- each call (plan_cache_mode), so a plan made for an empty table is not kept for a full one.

CREATE OR REPLACE FUNCTION crm_budget_release(p_tokens uuid[]) RETURNS void
LANGUAGE sql SET plan_cache_mode = force_custom_plan AS $$
    UPDATE crm_budget_slot s
       SET livre_em = now() + make_interval(secs => w.per_seconds + w.margin), anterior = token,
           token = NULL
      FROM crm_budget_window w
     WHERE s.token = ANY(p_tokens) AND w.conta = s.conta AND w.janela = s.janela;
$$;

CREATE OR REPLACE FUNCTION crm_budget_release_answered(p_tokens uuid[], p_ages float8[])
RETURNS void
LANGUAGE sql SET plan_cache_mode = force_custom_plan AS $$
    UPDATE crm_budget_slot s
       SET livre_em = now() + make_interval(secs => w.per_seconds + w.margin - t.age),
           anterior = s.token, token = NULL
      FROM unnest(p_tokens, p_ages) AS t (token, age), crm_budget_window w
     WHERE s.token = ANY(p_tokens) AND s.token = t.token
       AND w.conta = s.conta AND w.janela = s.janela;
$$;

-- The renewal of the requests still out, which crmd sent as a statement of its own (a plan
-- cached per connection).
CREATE FUNCTION crm_budget_renew(p_tokens uuid[], p_hold float8) RETURNS void
LANGUAGE sql SET plan_cache_mode = force_custom_plan AS $$
    UPDATE crm_budget_slot s
       SET livre_em = now() + make_interval(secs => p_hold + w.per_seconds + w.margin)
      FROM crm_budget_window w
     WHERE s.token = ANY(p_tokens) AND w.conta = s.conta AND w.janela = s.janela;
$$;

-- The functions of 0010 gain columns: dropped and made again (the wrappers of 0008 and 0009
-- call them by name and read their columns by name).
DROP FUNCTION crm_budget_grant_each(text[], integer[], uuid[], boolean[], float8[], float8);
DROP FUNCTION crm_budget_grant_many(text, uuid[], boolean, float8, float8);
DROP FUNCTION crm_budget_grant(text, uuid, boolean, float8, float8);

CREATE FUNCTION crm_budget_grant(p_conta text, p_token uuid, p_bulk boolean, p_hold float8,
                                 p_ahead float8,
                                 OUT granted boolean, OUT wait float8, OUT ready float8,
                                 OUT pausada_ate timestamptz, OUT motivo text,
                                 OUT db_ms float8, OUT freed_by uuid, OUT freed_lead float8,
                                 OUT ready_rest float8)
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    horizon timestamptz := now() + make_interval(secs => p_ahead);
    w crm_budget_window;
    found_slot integer;
    found_free timestamptz;
    found_by uuid;
    made text;  -- 'live' or 'bulk': a slot not made yet, made by this grant
    soonest timestamptz;
    -- What this grant takes, per window: (janela, slot, made, free again at).
    js integer[] := '{}';
    slots integer[] := '{}';
    kinds text[] := '{}';
    frees timestamptz[] := '{}';
BEGIN
    granted := false;
    wait := 0;
    ready := 0;
    ready_rest := 0;
    SELECT s.pausada_ate, s.motivo INTO pausada_ate, motivo
      FROM crm_account_state s WHERE s.conta = p_conta;
    IF pausada_ate IS NOT NULL AND pausada_ate > now() THEN
        wait := EXTRACT(EPOCH FROM pausada_ate - now());
        db_ms := EXTRACT(EPOCH FROM clock_timestamp() - started) * 1000;
        RETURN;
    END IF;
    FOR w IN SELECT * FROM crm_budget_window WHERE conta = p_conta ORDER BY janela FOR UPDATE
    LOOP
        -- Live work takes a slot bulk work cannot use, a new one of those, then a bulk slot;
        -- bulk work only its own: its share of the window is all it can ever hold. Only when
        -- none is free and none can be made, the one that frees itself first, if that is
        -- within the horizon (granted ahead: never instead of a slot free now).
        found_slot := NULL;
        found_free := NULL;
        made := NULL;
        IF NOT p_bulk THEN
            SELECT slot INTO found_slot FROM crm_budget_slot
             WHERE conta = p_conta AND janela = w.janela AND NOT bulk AND livre_em <= now()
             ORDER BY livre_em LIMIT 1;
            IF found_slot IS NULL AND w.created_live < w.requests - w.bulk_slots THEN
                found_slot := w.bulk_slots + w.created_live;
                made := 'live';
            END IF;
        END IF;
        IF found_slot IS NULL THEN
            SELECT slot INTO found_slot FROM crm_budget_slot
             WHERE conta = p_conta AND janela = w.janela AND bulk AND livre_em <= now()
             ORDER BY livre_em LIMIT 1;
        END IF;
        IF found_slot IS NULL AND w.created_bulk < w.bulk_slots THEN
            found_slot := w.created_bulk;
            made := 'bulk';
        END IF;
        IF found_slot IS NULL THEN
            SELECT slot, livre_em, anterior INTO found_slot, found_free, found_by
              FROM crm_budget_slot
             WHERE conta = p_conta AND janela = w.janela AND (bulk OR NOT p_bulk)
             ORDER BY livre_em LIMIT 1;
            IF found_slot IS NULL OR found_free > horizon THEN
                wait := GREATEST(wait, EXTRACT(EPOCH FROM found_free - horizon), 0.001);
                found_slot := NULL;
            ELSIF EXTRACT(EPOCH FROM found_free - now()) > ready THEN
                -- The latest slot so far: the others' wait becomes the rest.
                ready_rest := ready;
                ready := EXTRACT(EPOCH FROM found_free - now());
                freed_by := found_by;
                freed_lead := CASE WHEN found_by IS NOT NULL THEN w.per_seconds + w.margin END;
            ELSE
                ready_rest := GREATEST(ready_rest, EXTRACT(EPOCH FROM found_free - now()));
            END IF;
        END IF;
        IF found_slot IS NOT NULL THEN
            js := js || w.janela;
            slots := slots || found_slot;
            kinds := kinds || made;
            -- Held from the latest the request can leave (the horizon) for its timeout.
            frees := frees || (horizon + make_interval(secs => p_hold + w.per_seconds + w.margin));
        END IF;
    END LOOP;
    IF wait <= 0 THEN
        -- Every window has room: take the slots, making those not made yet, in three statements
        -- whatever the number of windows.
        UPDATE crm_budget_slot s SET livre_em = t.free, token = p_token, anterior = NULL
          FROM unnest(js, slots, kinds, frees) AS t (janela, slot, made, free)
         WHERE t.made IS NULL AND s.conta = p_conta AND s.janela = t.janela AND s.slot = t.slot;
        IF array_position(kinds, 'live') IS NOT NULL OR array_position(kinds, 'bulk') IS NOT NULL
        THEN
            INSERT INTO crm_budget_slot (conta, janela, slot, bulk, livre_em, token)
            SELECT p_conta, t.janela, t.slot, t.made = 'bulk', t.free, p_token
              FROM unnest(js, slots, kinds, frees) AS t (janela, slot, made, free)
             WHERE t.made IS NOT NULL;
            UPDATE crm_budget_window w2
               SET created_live = created_live + (t.made = 'live')::integer,
                   created_bulk = created_bulk + (t.made = 'bulk')::integer
              FROM unnest(js, kinds) AS t (janela, made)
             WHERE t.made IS NOT NULL AND w2.conta = p_conta AND w2.janela = t.janela;
        END IF;
        granted := true;
    ELSE
        ready := 0;
        ready_rest := 0;
        freed_by := NULL;
        freed_lead := NULL;
    END IF;
    db_ms := EXTRACT(EPOCH FROM clock_timestamp() - started) * 1000;
END;
$$;

-- The tokens granted in order until one is refused; the arrays hold each granted one's
-- `ready`, `freed_by`, `freed_lead` and `ready_rest` (see crm_budget_grant).
CREATE FUNCTION crm_budget_grant_many(p_conta text, p_tokens uuid[], p_bulk boolean,
                                      p_hold float8, p_ahead float8,
                                      OUT granted integer, OUT wait float8,
                                      OUT ready float8[],
                                      OUT pausada_ate timestamptz, OUT motivo text,
                                      OUT db_ms float8, OUT freed_by uuid[],
                                      OUT freed_lead float8[], OUT ready_rest float8[])
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    t uuid;
    one record;
BEGIN
    granted := 0;
    wait := 0;
    ready := '{}';
    freed_by := '{}';
    freed_lead := '{}';
    ready_rest := '{}';
    FOREACH t IN ARRAY p_tokens LOOP
        SELECT * INTO one FROM crm_budget_grant(p_conta, t, p_bulk, p_hold, p_ahead);
        IF NOT one.granted THEN
            wait := one.wait;
            pausada_ate := one.pausada_ate;
            motivo := one.motivo;
            EXIT;
        END IF;
        granted := granted + 1;
        ready := ready || one.ready;
        freed_by := freed_by || one.freed_by;
        freed_lead := freed_lead || one.freed_lead;
        ready_rest := ready_rest || one.ready_rest;
    END LOOP;
    db_ms := EXTRACT(EPOCH FROM clock_timestamp() - started) * 1000;
END;
$$;

CREATE FUNCTION crm_budget_grant_each(p_contas text[], p_sizes integer[], p_tokens uuid[],
                                      p_bulk boolean[], p_hold float8[], p_ahead float8)
RETURNS TABLE (pedido integer, granted integer, wait float8, ready float8[],
               pausada_ate timestamptz, motivo text, db_ms float8, freed_by uuid[],
               freed_lead float8[], ready_rest float8[])
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
            p_contas[i], p_tokens[starts[i] : starts[i] + p_sizes[i] - 1], p_bulk[i], p_hold[i],
            p_ahead);
        pedido := i;
        granted := one.granted;
        wait := one.wait;
        ready := one.ready;
        pausada_ate := one.pausada_ate;
        motivo := one.motivo;
        db_ms := one.db_ms;
        freed_by := one.freed_by;
        freed_lead := one.freed_lead;
        ready_rest := one.ready_rest;
        RETURN NEXT;
    END LOOP;
END;
$$;
