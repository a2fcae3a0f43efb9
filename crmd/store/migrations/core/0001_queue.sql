-- crmd core schema: the outbox queue, the attempt log and the ERP-to-CRM id map.
-- Names speak the ERP's language and keep the old PHP system's tables and columns, so producers
-- and monitoring SQL written for it keep working.

CREATE TABLE crm_sync_queue (
    id                bigserial PRIMARY KEY,
    loja_id           integer     NOT NULL,
    entidade          text        NOT NULL
        CHECK (entidade IN ('clientes', 'produtos', 'vendas', 'atividades')),
    entidade_id       bigint      NOT NULL,
    acao              text        NOT NULL DEFAULT 'upsert' CHECK (acao IN ('upsert', 'delete')),
    prioridade        smallint    NOT NULL DEFAULT 3,
    -- pendente: waiting (maybe for proxima_tentativa); processando: leased to a worker until
    -- lease_ate; concluido: done; falhou: gave up after max attempts or a permanent error.
    estado            text        NOT NULL DEFAULT 'pendente'
        CHECK (estado IN ('pendente', 'processando', 'concluido', 'falhou')),
    -- The old system's flag, derived so it can never disagree with estado.
    processado        boolean     GENERATED ALWAYS AS (estado = 'concluido') STORED,
    tentativas        integer     NOT NULL DEFAULT 0,
    -- Times the item was put back to wait for a record it depends on (a venda's cliente).
    adiamentos        integer     NOT NULL DEFAULT 0,
    proxima_tentativa timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_ate         timestamptz,
    ultimo_erro       text,
    criado_em         timestamptz NOT NULL DEFAULT now(),
    atualizado_em     timestamptz NOT NULL DEFAULT now(),
    processado_em     timestamptz
);

-- Claiming reads only this index: it holds the pending and in-flight rows, never the done ones,
-- so a claim costs the same with ten thousand or ten million finished rows in the table.
CREATE INDEX crm_sync_queue_claim_idx ON crm_sync_queue (prioridade DESC, id)
    WHERE estado IN ('pendente', 'processando');
-- One pending item per record at most: this index is what coalescing rests on (ON CONFLICT).
CREATE UNIQUE INDEX crm_sync_queue_pending_key ON crm_sync_queue (entidade, entidade_id, loja_id)
    WHERE estado = 'pendente';
-- Claiming checks that a record is not already in flight elsewhere.
CREATE INDEX crm_sync_queue_inflight_key_idx ON crm_sync_queue (entidade, entidade_id, loja_id)
    WHERE estado = 'processando';
-- When the next retry is due, for a sleeping worker.
CREATE INDEX crm_sync_queue_due_idx ON crm_sync_queue (proxima_tentativa)
    WHERE estado = 'pendente';
-- Cleanup and monitoring of finished and failed items.
CREATE INDEX crm_sync_queue_done_idx ON crm_sync_queue (processado_em)
    WHERE estado IN ('concluido', 'falhou');

-- Coalescing for every producer, also those that INSERT directly as the old PHP hooks did: the
-- row is re-inserted with ON CONFLICT against the unique index above, so a record that already
-- has a pending item keeps that one item, at the higher priority and with the newest action.
-- Concurrent producers of one record are serialised by the index itself (no lock table use, so
-- a transaction may enqueue any number of records). An item in flight is not pending, so a
-- change arriving while it is being sent gets a new item: the in-flight payload may be stale.
-- The setting crmd.inner_insert marks the re-insert (and crmd's own bulk inserts, which do the
-- same ON CONFLICT themselves) so the trigger lets it through.
CREATE FUNCTION crm_sync_queue_coalesce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.estado <> 'pendente' OR current_setting('crmd.inner_insert', true) = 'on' THEN
        RETURN NEW;
    END IF;
    PERFORM set_config('crmd.inner_insert', 'on', true);
    INSERT INTO crm_sync_queue (id, loja_id, entidade, entidade_id, acao, prioridade,
                                proxima_tentativa, criado_em)
    VALUES (NEW.id, NEW.loja_id, NEW.entidade, NEW.entidade_id, NEW.acao, NEW.prioridade,
            NEW.proxima_tentativa, NEW.criado_em)
    ON CONFLICT (entidade, entidade_id, loja_id) WHERE estado = 'pendente' DO UPDATE
       SET prioridade = GREATEST(crm_sync_queue.prioridade, EXCLUDED.prioridade),
           acao = EXCLUDED.acao,
           atualizado_em = now();
    PERFORM set_config('crmd.inner_insert', 'off', true);
    PERFORM pg_notify('crm_sync', '');
    RETURN NULL;  -- the row went in (or was merged) above
END;
$$;

CREATE TRIGGER crm_sync_queue_coalesce BEFORE INSERT ON crm_sync_queue
    FOR EACH ROW EXECUTE FUNCTION crm_sync_queue_coalesce();

-- The producers' entry point. NOTIFY is sent by the trigger, and delivered at commit.
CREATE FUNCTION crm_enqueue(
    loja_id integer, entidade text, entidade_id bigint,
    prioridade integer DEFAULT 3, acao text DEFAULT 'upsert'
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, acao)
    VALUES (crm_enqueue.loja_id, crm_enqueue.entidade, crm_enqueue.entidade_id,
            crm_enqueue.prioridade, crm_enqueue.acao);
$$;

-- Put a leased item back to pending (a retry later, a release, a wait for a dependency). When a
-- newer change of the record is already pending, that item carries the record forward: it takes
-- the higher priority and this one is dropped (its attempts are in crm_sync_log). Returns false
-- when the lease token is stale.
CREATE FUNCTION crm_sync_requeue(
    p_id bigint, p_token uuid, p_delay float8, p_erro text,
    p_devolve_tentativa boolean, p_adiamento boolean
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    it crm_sync_queue;
BEGIN
    SELECT * INTO it FROM crm_sync_queue
     WHERE id = p_id AND lease_token = p_token AND estado = 'processando'
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    LOOP
        UPDATE crm_sync_queue
           SET prioridade = GREATEST(prioridade, it.prioridade), atualizado_em = now()
         WHERE estado = 'pendente' AND entidade = it.entidade
           AND entidade_id = it.entidade_id AND loja_id = it.loja_id;
        IF FOUND THEN
            DELETE FROM crm_sync_queue WHERE id = p_id;
            RETURN true;
        END IF;
        BEGIN
            UPDATE crm_sync_queue
               SET estado = 'pendente', lease_token = NULL, lease_ate = NULL,
                   tentativas = CASE WHEN p_devolve_tentativa THEN GREATEST(tentativas - 1, 0)
                                     ELSE tentativas END,
                   adiamentos = adiamentos + CASE WHEN p_adiamento THEN 1 ELSE 0 END,
                   ultimo_erro = COALESCE(p_erro, ultimo_erro),
                   proxima_tentativa = now() + make_interval(secs => p_delay),
                   atualizado_em = now()
             WHERE id = p_id;
            RETURN true;
        EXCEPTION WHEN unique_violation THEN
            -- A producer committed a new pending item just now: merge into it (loop once more).
        END;
    END LOOP;
END;
$$;

-- One row per attempt, successful or not.
CREATE TABLE crm_sync_log (
    id          bigserial PRIMARY KEY,
    queue_id    bigint,
    conta       text        NOT NULL,
    loja_id     integer     NOT NULL,
    entidade    text        NOT NULL,
    entidade_id bigint      NOT NULL,
    acao        text        NOT NULL,
    tentativa   integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('sucesso', 'erro')),
    http_status integer,
    mensagem    text,
    external_id text,
    -- CRM requests this attempt sent (a lookup plus a create is two): the daily budget is derived
    -- from this column, so it survives restarts.
    requisicoes integer     NOT NULL DEFAULT 0,
    duracao_ms  integer,
    criado_em   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_sync_log_criado_em_idx ON crm_sync_log (criado_em);
CREATE INDEX crm_sync_log_conta_idx ON crm_sync_log (conta, criado_em) WHERE requisicoes > 0;

-- Which CRM record an ERP record is, per CRM account, and what was last sent to it. A row with
-- no external_id records a create whose outcome is unknown (written just before the POST): the
-- next attempt looks the record up by its natural key before creating it again.
CREATE TABLE crm_sync_map (
    conta           text        NOT NULL,
    entidade        text        NOT NULL,
    entidade_id     bigint      NOT NULL,
    external_id     text,
    payload_hash    text,
    sincronizado_em timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conta, entidade, entidade_id)
);

-- Record one attempt's outcome in one statement (so one round trip, and atomic): the CRM id
-- (p_mapa 'gravar') or its removal ('remover'), the log row, and the item's new state:
-- 'concluido', 'falhou', or pending again after p_delay seconds ('pendente', or 'devolver'
-- to give the attempt back). Returns false when the lease
-- token is stale: the log row and the CRM id, facts about the CRM, are kept; the item's state
-- is left to the worker that holds it now.
CREATE FUNCTION crm_sync_settle(
    p_id bigint, p_token uuid, p_conta text, p_loja_id integer, p_entidade text,
    p_entidade_id bigint, p_acao text, p_tentativa integer,
    p_mapa text, p_external_id text, p_hash text,
    p_status text, p_http_status integer, p_mensagem text, p_requisicoes integer,
    p_duracao_ms integer, p_estado text, p_delay float8
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_mapa = 'remover' THEN
        DELETE FROM crm_sync_map
         WHERE conta = p_conta AND entidade = p_entidade AND entidade_id = p_entidade_id;
    ELSIF p_mapa = 'gravar' THEN
        INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
        VALUES (p_conta, p_entidade, p_entidade_id, p_external_id, p_hash)
        ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
           SET external_id = EXCLUDED.external_id, payload_hash = EXCLUDED.payload_hash,
               sincronizado_em = now();
    END IF;
    INSERT INTO crm_sync_log (queue_id, conta, loja_id, entidade, entidade_id, acao, tentativa,
                              status, http_status, mensagem, external_id, requisicoes,
                              duracao_ms)
    VALUES (p_id, p_conta, p_loja_id, p_entidade, p_entidade_id, p_acao, p_tentativa,
            p_status, p_http_status, p_mensagem, p_external_id, p_requisicoes, p_duracao_ms);
    IF p_estado IN ('pendente', 'devolver') THEN
        -- 'devolver': the account failed (429, authentication), not the item: no attempt spent.
        RETURN crm_sync_requeue(p_id, p_token, p_delay, p_mensagem, p_estado = 'devolver', false);
    END IF;
    UPDATE crm_sync_queue
       SET estado = p_estado, lease_token = NULL, lease_ate = NULL,
           ultimo_erro = CASE WHEN p_estado = 'falhou' THEN p_mensagem END,
           processado_em = now(), atualizado_em = now()
     WHERE id = p_id AND lease_token = p_token AND estado = 'processando';
    RETURN FOUND;
END;
$$;
