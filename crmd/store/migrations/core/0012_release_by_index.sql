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
