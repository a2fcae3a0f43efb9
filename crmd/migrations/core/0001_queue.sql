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
-- Coalescing looks up the pending item of one record; claiming checks it is not in flight.
CREATE INDEX crm_sync_queue_open_key_idx ON crm_sync_queue (entidade, entidade_id, loja_id)
    WHERE estado IN ('pendente', 'processando');
-- When the next retry is due, for a sleeping worker.
CREATE INDEX crm_sync_queue_due_idx ON crm_sync_queue (proxima_tentativa)
    WHERE estado = 'pendente';
-- Cleanup and monitoring of finished and failed items.
CREATE INDEX crm_sync_queue_done_idx ON crm_sync_queue (processado_em)
    WHERE estado IN ('concluido', 'falhou');

-- Coalescing for every producer, also those that INSERT directly as the old PHP hooks did: when
-- the record already has a pending item, raise that item's priority (and take the newest action)
-- instead of adding a second one. An item in flight is not pending, so a change arriving while it
-- is being sent gets a new item: the in-flight payload may already be stale.
CREATE FUNCTION crm_sync_queue_coalesce() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    existing bigint;
BEGIN
    IF NEW.estado <> 'pendente' THEN
        RETURN NEW;
    END IF;
    -- Serialise producers of the same record until their transaction ends, so two concurrent
    -- inserts cannot both miss each other's pending row. (Read committed: each statement below
    -- sees rows committed by whoever held the lock before.)
    PERFORM pg_advisory_xact_lock(
        hashtextextended(NEW.entidade || ':' || NEW.loja_id || ':' || NEW.entidade_id, 0));
    -- The row lock taken by UPDATE waits for a claimer that holds this row; if the claim wins,
    -- the row is no longer pending and we fall through to inserting a new item.
    UPDATE crm_sync_queue
       SET prioridade = GREATEST(prioridade, NEW.prioridade),
           acao = NEW.acao,
           atualizado_em = now()
     WHERE entidade = NEW.entidade AND entidade_id = NEW.entidade_id AND loja_id = NEW.loja_id
       AND estado = 'pendente'
    RETURNING id INTO existing;
    PERFORM pg_notify('crm_sync', '');
    IF existing IS NOT NULL THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
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

-- Which CRM record an ERP record is, per CRM account, and what was last sent to it.
CREATE TABLE crm_sync_map (
    conta           text        NOT NULL,
    entidade        text        NOT NULL,
    entidade_id     bigint      NOT NULL,
    external_id     text        NOT NULL,
    payload_hash    text,
    sincronizado_em timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conta, entidade, entidade_id)
);
