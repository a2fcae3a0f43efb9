-- One settle path for every change of a claimed item's state: done, failed, tried again later,
-- given back (a paused account, a shutdown) or put off to wait for a record it needs. The batch
-- travels as one array of a composite type instead of 18 parallel arrays built by position.

CREATE TYPE crm_sync_outcome AS (
    id          bigint,
    token       uuid,       -- the lease token of the claim: a stale one changes no queue state
    conta       text,
    loja_id     integer,
    entidade    text,
    entidade_id bigint,
    acao        text,
    tentativa   integer,
    mapa        text,       -- 'gravar' (store external_id and hash), 'remover', or NULL
    external_id text,
    hash        text,
    status      text,       -- the log row's status, 'sucesso' or 'erro'; NULL: no log row
    http_status integer,
    mensagem    text,
    requisicoes integer,
    duracao_ms  integer,
    -- 'concluido' or 'falhou'; 'pendente' (due again after delay, the attempt spent),
    -- 'devolver' (due again, the attempt given back), 'soltar' (due again, no worker had started
    -- on it, so no attempt to give back) or 'adiar' (given back to wait for a dependency,
    -- counted in adiamentos so it cannot wait forever).
    estado      text,
    delay       float8
);

-- One outcome: the CRM id, the log row and the item's new state, atomically. Returns 'ok', or
-- 'stale' when the lease token is stale (the log row and the CRM id, facts about the CRM, are
-- kept; the item's state is left to the worker that holds it now), or 'twin' when the CRM id is
-- already linked to another ERP record (two twins raced past the engine's check): then this item
-- fails, naming the other record, rather than the whole batch's statement.
CREATE FUNCTION crm_sync_settle_one(o crm_sync_outcome) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    result text := 'ok';
    twin bigint;
BEGIN
    IF o.mapa = 'remover' THEN
        DELETE FROM crm_sync_map
         WHERE conta = o.conta AND entidade = o.entidade AND entidade_id = o.entidade_id;
    ELSIF o.mapa = 'gravar' THEN
        BEGIN
            INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
            VALUES (o.conta, o.entidade, o.entidade_id, o.external_id, o.hash)
            ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
               SET external_id = EXCLUDED.external_id, payload_hash = EXCLUDED.payload_hash,
                   chave = NULL, sincronizado_em = now();
        EXCEPTION WHEN unique_violation THEN
            SELECT m.entidade_id INTO twin FROM crm_sync_map m
             WHERE m.conta = o.conta AND m.entidade = o.entidade
               AND m.external_id = o.external_id;
            result := 'twin';
            o.status := 'erro';
            o.estado := 'falhou';
            o.mensagem := format('o registro %s do CRM já está vinculado a %s %s do ERP; '
                                 '%s %s não foi vinculado', o.external_id, o.entidade, twin,
                                 o.entidade, o.entidade_id);
        END;
    END IF;
    IF o.status IS NOT NULL THEN
        INSERT INTO crm_sync_log (queue_id, conta, loja_id, entidade, entidade_id, acao,
                                  tentativa, status, http_status, mensagem, external_id,
                                  requisicoes, duracao_ms)
        VALUES (o.id, o.conta, o.loja_id, o.entidade, o.entidade_id, o.acao, o.tentativa,
                o.status, o.http_status, o.mensagem, o.external_id, o.requisicoes,
                o.duracao_ms);
    END IF;
    IF o.estado IN ('pendente', 'devolver', 'soltar', 'adiar') THEN
        IF NOT crm_sync_requeue(o.id, o.token, o.delay, NULLIF(o.mensagem, ''),
                                o.estado IN ('devolver', 'adiar'), o.estado = 'adiar') THEN
            RETURN 'stale';
        END IF;
        RETURN result;
    END IF;
    UPDATE crm_sync_queue
       SET estado = o.estado, lease_token = NULL, lease_ate = NULL,
           ultimo_erro = CASE WHEN o.estado = 'falhou' THEN o.mensagem END,
           processado_em = now(), atualizado_em = now()
     WHERE id = o.id AND lease_token = o.token AND estado = 'processando';
    RETURN CASE WHEN FOUND THEN result ELSE 'stale' END;
END;
$$;

-- Any number of outcomes in one statement (one round trip, one commit): a result per outcome,
-- in the order given.
CREATE FUNCTION crm_sync_settle_v2(outcomes crm_sync_outcome[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    o crm_sync_outcome;
    results text[] := '{}';
BEGIN
    FOREACH o IN ARRAY outcomes LOOP
        results := results || crm_sync_settle_one(o);
    END LOOP;
    RETURN results;
END;
$$;

-- The previous signature is no longer called; a daemon of the earlier version still running
-- while this migration is applied settles nothing more and its items come back after their
-- lease (the create marker in crm_sync_map prevents a duplicate).
DROP FUNCTION crm_sync_settle(bigint, uuid, text, integer, text, bigint, text, integer, text,
                              text, text, text, integer, text, integer, integer, text, float8);
