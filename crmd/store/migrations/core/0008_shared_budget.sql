-- The request budget of each CRM account, shared by every crmd instance on the database, and
-- the instances themselves. See docs/SHARED_BUDGET.md for the design and why.

-- One row per account and rate-limit window ("janela": the limit's position in the config).
CREATE TABLE crm_budget_window (
    conta       text    NOT NULL,
    janela      integer NOT NULL,
    requests    integer NOT NULL CHECK (requests > 0),
    per_seconds float8  NOT NULL CHECK (per_seconds > 0),
    margin      float8  NOT NULL DEFAULT 0,
    -- Slots 0 .. bulk_slots-1 may serve bulk work (the full sync); live work may take any slot,
    -- and takes those from bulk_slots up first. Slots are made as they are first needed:
    -- created_bulk of the first kind, created_live of the second.
    bulk_slots   integer NOT NULL,
    created_bulk integer NOT NULL DEFAULT 0,
    created_live integer NOT NULL DEFAULT 0,
    PRIMARY KEY (conta, janela)
);

-- A window's slots: at most `requests` of them. A request takes one free slot of every window
-- of its account (free: `livre_em` has passed) and holds it until its answer plus the window's
-- length. While it is out, `livre_em` is the latest its answer can come (its timeout) plus the
-- window, so a slot held by a process that died frees itself.
CREATE TABLE crm_budget_slot (
    conta    text        NOT NULL,
    janela   integer     NOT NULL,
    slot     integer     NOT NULL,
    bulk     boolean     NOT NULL,
    livre_em timestamptz NOT NULL,
    token    uuid,  -- the request holding it, until its answer is recorded
    PRIMARY KEY (conta, janela, slot)
);
-- The free slot to take is the one free longest: the first entry of this index.
CREATE INDEX crm_budget_slot_free_idx ON crm_budget_slot (conta, janela, bulk, livre_em);
CREATE INDEX crm_budget_slot_token_idx ON crm_budget_slot (token) WHERE token IS NOT NULL;

-- Pauses of an account (a 429, an authentication failure, the breaker), seen by every instance.
CREATE TABLE crm_account_state (
    conta        text PRIMARY KEY,
    pausada_ate  timestamptz,
    motivo       text,
    atualizado_em timestamptz NOT NULL DEFAULT now()
);

-- Every running instance, with its heartbeat: `crmd status` and the page list them.
CREATE TABLE crm_instance (
    id           uuid        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    versao       text        NOT NULL,
    iniciado_em  timestamptz NOT NULL DEFAULT now(),
    visto_em     timestamptz NOT NULL DEFAULT now()
);

-- Make (or remake) an account's windows. A window whose limits changed is rebuilt from the
-- slots still held (or, when new, from the requests the log says were sent within it, so the
-- first start after this migration does not spend the day twice), keeping the latest-freed of
-- them: no window gains room it should not have.
CREATE FUNCTION crm_budget_configure(
    p_conta text, p_requests integer[], p_per_seconds float8[], p_margin float8,
    p_bulk_share float8
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    j integer;
    n integer;
    bulk integer;
    per float8;
    w crm_budget_window;
    held integer;
    times timestamptz[];
    tokens uuid[];
BEGIN
    PERFORM 1 FROM crm_budget_window WHERE conta = p_conta ORDER BY janela FOR UPDATE;
    DELETE FROM crm_budget_slot WHERE conta = p_conta AND janela >= cardinality(p_requests);
    DELETE FROM crm_budget_window WHERE conta = p_conta AND janela >= cardinality(p_requests);
    FOR j IN 0 .. cardinality(p_requests) - 1 LOOP
        n := p_requests[j + 1];
        per := p_per_seconds[j + 1];
        bulk := LEAST(n, GREATEST(1, floor(n * p_bulk_share)::integer));
        SELECT * INTO w FROM crm_budget_window WHERE conta = p_conta AND janela = j;
        IF FOUND AND w.requests = n AND w.per_seconds = per AND w.margin = p_margin
           AND w.bulk_slots = bulk THEN
            CONTINUE;
        END IF;
        IF FOUND THEN  -- the slots still held
            SELECT coalesce(array_agg(livre_em ORDER BY livre_em DESC), '{}'),
                   coalesce(array_agg(token ORDER BY livre_em DESC), '{}')
              INTO times, tokens
              FROM crm_budget_slot
             WHERE conta = p_conta AND janela = j AND livre_em > now();
        ELSE  -- what the log says was sent within the window
            SELECT coalesce(array_agg(t ORDER BY t DESC), '{}'), '{}' INTO times, tokens
              FROM (SELECT l.criado_em + make_interval(secs => per + p_margin) AS t
                      FROM crm_sync_log l, generate_series(1, l.requisicoes)
                     WHERE l.conta = p_conta AND l.requisicoes > 0
                       AND l.criado_em > now() - make_interval(secs => per)) AS sent;
        END IF;
        DELETE FROM crm_budget_slot WHERE conta = p_conta AND janela = j;
        -- The held ones fill the live slots first (bulk_slots up), then the bulk ones (0 up).
        INSERT INTO crm_budget_slot (conta, janela, slot, bulk, livre_em, token)
        SELECT p_conta, j,
               CASE WHEN rn < n - bulk THEN bulk + rn ELSE rn - (n - bulk) END,
               rn >= n - bulk, h.livre_em, h.token
          FROM (SELECT t.livre_em, t.token, t.ord - 1 AS rn
                  FROM unnest(times, tokens) WITH ORDINALITY AS t (livre_em, token, ord)) AS h
         WHERE rn < n;
        GET DIAGNOSTICS held = ROW_COUNT;
        INSERT INTO crm_budget_window (conta, janela, requests, per_seconds, margin, bulk_slots,
                                       created_bulk, created_live)
        VALUES (p_conta, j, n, per, p_margin, bulk, GREATEST(held - (n - bulk), 0),
                LEAST(held, n - bulk))
        ON CONFLICT (conta, janela) DO UPDATE
           SET requests = EXCLUDED.requests, per_seconds = EXCLUDED.per_seconds,
               margin = EXCLUDED.margin, bulk_slots = EXCLUDED.bulk_slots,
               created_bulk = EXCLUDED.created_bulk, created_live = EXCLUDED.created_live;
    END LOOP;
END;
$$;

-- Grant one request a slot in every window of the account, or say how long to wait. One call,
-- one round trip; the account's window rows are locked for the call's few statements, which
-- serialises the grants of one account across instances (and nothing else: no row is shared by
-- two accounts). `p_hold`: the request's timeout, the longest it can be out.
-- Returns: granted; wait (seconds until a grant may succeed; 0 when granted); the account's
-- pause (until, reason); db_ms, the call's own time in the database.
CREATE FUNCTION crm_budget_grant(p_conta text, p_token uuid, p_bulk boolean, p_hold float8,
                                 OUT granted boolean, OUT wait float8,
                                 OUT pausada_ate timestamptz, OUT motivo text,
                                 OUT db_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    w crm_budget_window;
    found_slot integer;
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
        -- bulk work only its own: its share of the window is all it can ever hold.
        found_slot := NULL;
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
            SELECT min(livre_em) INTO soonest FROM crm_budget_slot
             WHERE conta = p_conta AND janela = w.janela AND (bulk OR NOT p_bulk);
            wait := GREATEST(wait, EXTRACT(EPOCH FROM soonest - now()), 0.001);
        ELSE
            js := js || w.janela;
            slots := slots || found_slot;
            kinds := kinds || made;
            frees := frees || (now() + make_interval(secs => p_hold + w.per_seconds + w.margin));
        END IF;
    END LOOP;
    IF wait <= 0 THEN
        -- Every window has room: take the slots, making those not made yet, in three statements
        -- whatever the number of windows.
        UPDATE crm_budget_slot s SET livre_em = t.free, token = p_token
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
    END IF;
    db_ms := EXTRACT(EPOCH FROM clock_timestamp() - started) * 1000;
END;
$$;

-- Requests answered (or given up): each holds its slots for a window's length from now, the
-- token's work is done. Any number in one statement (group commit of answers).
CREATE FUNCTION crm_budget_release(p_tokens uuid[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE crm_budget_slot s
       SET livre_em = now() + make_interval(secs => w.per_seconds + w.margin), token = NULL
      FROM crm_budget_window w
     WHERE s.token = ANY(p_tokens) AND w.conta = s.conta AND w.janela = s.janela;
$$;
