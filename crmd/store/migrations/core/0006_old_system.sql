-- What an installation of the old PHP system keeps relying on, and the state of items crmd
-- cannot send anywhere:
--   * 'ignorado': an item of an entity the CRM has no resource for (GestãoClick's atividades):
--     done, not failed, counted apart; its attempt is logged with status 'ignorado'.
--   * The old troubleshooting guide's reset, UPDATE crm_sync_queue SET tentativas = 0 WHERE
--     tentativas >= 3, brings failed items back (pending, due now), so a failed item reads
--     tentativas >= 3 as the guide expects (the attempts really made are in crm_sync_log).
--   * `processado` is true for every item with nothing left to do (done or ignored).
--   * Views for the guide's monitoring queries (which were MySQL).

-- The new state. The CHECK constraints are replaced as a whole (their auto-generated names).
ALTER TABLE crm_sync_queue DROP CONSTRAINT crm_sync_queue_estado_check;
ALTER TABLE crm_sync_queue ADD CONSTRAINT crm_sync_queue_estado_check
    CHECK (estado IN ('pendente', 'processando', 'concluido', 'falhou', 'ignorado'));
ALTER TABLE crm_sync_log DROP CONSTRAINT crm_sync_log_status_check;
ALTER TABLE crm_sync_log ADD CONSTRAINT crm_sync_log_status_check
    CHECK (status IN ('sucesso', 'erro', 'ignorado'));

-- A generated column's expression cannot be changed before PostgreSQL 17, so it is dropped and
-- added again: that rewrites the queue table once (under this migration's lock; the daily cleanup
-- keeps it small). Nothing depends on the column; it moves to the end of the row.
ALTER TABLE crm_sync_queue DROP COLUMN processado;
ALTER TABLE crm_sync_queue ADD COLUMN processado boolean
    GENERATED ALWAYS AS (estado IN ('concluido', 'ignorado')) STORED;

-- The operator surface counts ignored items beside failed ones, and the cleanup removes old
-- ignored items as it removes done ones: both partial indexes take the new state.
DROP INDEX crm_sync_queue_ops_idx;
CREATE INDEX crm_sync_queue_ops_idx ON crm_sync_queue (estado, entidade, criado_em)
    WHERE estado IN ('pendente', 'processando', 'falhou', 'ignorado');
DROP INDEX crm_sync_queue_done_idx;
CREATE INDEX crm_sync_queue_done_idx ON crm_sync_queue (processado_em)
    WHERE estado IN ('concluido', 'falhou', 'ignorado');

-- Failed items as the old guide reads them, and its reset. Fires only on rows that are or
-- become failed (the WHEN clause), so the settles of the hot path never call it.
--   * An item that becomes failed reads tentativas >= 3, the old system's limit, whatever
--     [queue] max_attempts is and however early a permanent error stopped it.
--   * A failed item whose tentativas someone lowers below 3 (the guide's reset) is pending again,
--     due now, with its waits reset, and the workers are woken. When its record already has a
--     pending item, that item carries the record on (at the higher priority) and this one is
--     deleted by crm_sync_queue_fold below, as `crmd retry` folds. A create in doubt stays in
--     doubt (unlike `crmd retry`, the reset does not say a person checked the CRM).
-- A BEFORE trigger's queries see the rows the same statement changed before this one, so two
-- failed items of one record reset together leave one pending item. (If the pending item is
-- itself a target of the same UPDATE, which happens only with tentativas >= 3 on a pending item,
-- that is, [queue] max_attempts > 3, PostgreSQL refuses the statement: run it again.)
CREATE FUNCTION crm_sync_queue_failed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.estado <> 'falhou' THEN
        NEW.tentativas := GREATEST(NEW.tentativas, 3);
        RETURN NEW;
    END IF;
    IF NEW.tentativas >= 3 THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM crm_sync_queue
                WHERE estado = 'pendente' AND entidade = NEW.entidade
                  AND entidade_id = NEW.entidade_id AND loja_id = NEW.loja_id) THEN
        UPDATE crm_sync_queue
           SET prioridade = NEW.prioridade, atualizado_em = now()
         WHERE estado = 'pendente' AND entidade = NEW.entidade
           AND entidade_id = NEW.entidade_id AND loja_id = NEW.loja_id
           AND prioridade < NEW.prioridade;
        RETURN NEW;  -- still failed with tentativas < 3: folded, deleted after the update
    END IF;
    NEW.estado := 'pendente';
    NEW.adiamentos := 0;
    NEW.proxima_tentativa := now();
    NEW.processado_em := NULL;
    NEW.atualizado_em := now();
    PERFORM pg_notify('crm_sync', '');
    RETURN NEW;
END;
$$;

CREATE TRIGGER crm_sync_queue_failed BEFORE UPDATE ON crm_sync_queue
    FOR EACH ROW WHEN (NEW.estado = 'falhou')
    EXECUTE FUNCTION crm_sync_queue_failed();

-- A reset failed item whose record already waits in the queue: the waiting item goes on, this
-- one goes (its attempts are in crm_sync_log). AFTER the update, so the row may be deleted.
CREATE FUNCTION crm_sync_queue_fold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM crm_sync_queue WHERE id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER crm_sync_queue_fold AFTER UPDATE ON crm_sync_queue
    FOR EACH ROW WHEN (NEW.estado = 'falhou' AND NEW.tentativas < 3)
    EXECUTE FUNCTION crm_sync_queue_fold();

-- The old guide's monitoring queries, in PostgreSQL. Each reads a partial index.

-- Pending items per entity: waiting, and in flight now.
CREATE VIEW crm_sync_pendentes AS
SELECT entidade,
       count(*) AS pendentes,
       count(*) FILTER (WHERE estado = 'processando') AS processando,
       min(criado_em) AS mais_antigo
  FROM crm_sync_queue
 WHERE estado IN ('pendente', 'processando')
 GROUP BY entidade;

-- Items that failed and wait for a person (`crmd retry`, or the guide's reset).
CREATE VIEW crm_sync_erros AS
SELECT id, loja_id, entidade, entidade_id, acao, prioridade, tentativas, ultimo_erro, criado_em,
       processado_em
  FROM crm_sync_queue
 WHERE estado = 'falhou';

-- The last 24 hours of attempts. The rate counts successes among items sent (ignored items and
-- the lookups of `crmd plan --lookups`, acao 'consulta', are counted apart); NULL without any.
CREATE VIEW crm_sync_taxa_24h AS
SELECT count(*) FILTER (WHERE status <> 'ignorado' AND acao <> 'consulta') AS tentativas,
       count(*) FILTER (WHERE status = 'sucesso' AND acao <> 'consulta') AS sucessos,
       count(*) FILTER (WHERE status = 'erro' AND acao <> 'consulta') AS erros,
       count(*) FILTER (WHERE status = 'ignorado') AS ignorados,
       round(100.0 * count(*) FILTER (WHERE status = 'sucesso' AND acao <> 'consulta')
             / NULLIF(count(*) FILTER (WHERE status <> 'ignorado' AND acao <> 'consulta'), 0),
             1) AS taxa_sucesso
  FROM crm_sync_log
 WHERE criado_em > now() - interval '24 hours';

-- The last 100 errors, newest first (add LIMIT 10 for fewer).
CREATE VIEW crm_sync_ultimos_erros AS
SELECT id, criado_em, conta, loja_id, entidade, entidade_id, acao, tentativa, http_status,
       mensagem
  FROM crm_sync_log
 WHERE status = 'erro'
 ORDER BY criado_em DESC, id DESC
 LIMIT 100;
