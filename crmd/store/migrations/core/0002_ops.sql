-- Indexes for the operator surface (`crmd status`, `crmd failed`, /metrics, the dashboard).
-- Each query they run reads a small partial index, so it answers in milliseconds however many
-- finished rows the queue and the log hold.

-- Queue depth per state and entity, and the oldest pending item: an index-only scan of the open
-- and failed rows (done rows, the vast majority, are not in it).
CREATE INDEX crm_sync_queue_ops_idx ON crm_sync_queue (estado, entidade, criado_em)
    WHERE estado IN ('pendente', 'processando', 'falhou');

-- The last errors, newest first, without walking back through days of successes.
CREATE INDEX crm_sync_log_erro_idx ON crm_sync_log (criado_em)
    WHERE status = 'erro';
