-- What an operator looks at: every HTTP exchange of an attempt (a record's history), and the
-- queue's depth over time (the dashboard's chart).

-- The requests of one attempt, oldest first, with what was sent and what came back (the old
-- system's dados_enviados and dados_recebidos): a JSON array of
-- {"metodo", "caminho", "http_status", "duracao_ms", "enviado", "recebido"}, the bodies as JSON
-- text. crmd caps each body and masks secrets before it gets here (the tokens travel in headers,
-- which are never kept). The column lives and dies with its log row, so the daily cleanup keeps
-- the bodies exactly as long as the log ([cleanup] log_retention_days).
ALTER TABLE crm_sync_log ADD COLUMN trocas jsonb;

-- `crmd history clientes 42` and the record's page: its attempts, newest first, without walking
-- the whole log.
CREATE INDEX crm_sync_log_registro_idx ON crm_sync_log (entidade, entidade_id, criado_em DESC);

-- The settle path carries the exchanges to the log row.
ALTER TYPE crm_sync_outcome ADD ATTRIBUTE trocas jsonb;

-- As in 0005_settle_v2.sql, with the exchanges written to the log row; nothing else changes.
CREATE OR REPLACE FUNCTION crm_sync_settle_one(o crm_sync_outcome) RETURNS text
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
                                  requisicoes, duracao_ms, trocas)
        VALUES (o.id, o.conta, o.loja_id, o.entidade, o.entidade_id, o.acao, o.tentativa,
                o.status, o.http_status, o.mensagem, o.external_id, o.requisicoes,
                o.duracao_ms, o.trocas);
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

-- The queue's depth once a minute, written by every running daemon (the first one in a minute
-- wins: ON CONFLICT DO NOTHING), kept 8 days: the dashboard draws the last 24 h from it without
-- reconstructing the past from a queue whose done rows are cleaned up.
CREATE TABLE crm_sync_amostra (
    minuto      timestamptz PRIMARY KEY,
    pendentes   integer NOT NULL,
    processando integer NOT NULL,
    falhas      integer NOT NULL
);
