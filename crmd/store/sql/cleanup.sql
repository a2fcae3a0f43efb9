-- The daily cleanup (crmd/store/cleanup.py): old log rows and old done queue items, in batches.

-- name: cleanup_cutoffs
SELECT now() - make_interval(days => $1::integer) AS log_before,
       now() - make_interval(days => $2::integer) AS queue_before;

-- name: cleanup_log_count
SELECT count(*) FROM crm_sync_log WHERE criado_em < $1;

-- name: cleanup_log_batch
-- At most $2 rows per statement (each its own transaction), oldest first through the criado_em
-- index, so a large backlog never holds locks or one long transaction.
DELETE FROM crm_sync_log
 WHERE id IN (SELECT id FROM crm_sync_log WHERE criado_em < $1 ORDER BY criado_em LIMIT $2);

-- name: cleanup_queue_count
SELECT count(*) FROM crm_sync_queue
 WHERE estado IN ('concluido', 'ignorado') AND processado_em < $1;

-- name: cleanup_queue_batch
-- Done and ignored items only (failed ones wait for a person), by processado_em through the
-- partial index crm_sync_queue_done_idx; batched like the log.
DELETE FROM crm_sync_queue
 WHERE id IN (SELECT id FROM crm_sync_queue
               WHERE estado IN ('concluido', 'ignorado') AND processado_em < $1
               ORDER BY processado_em
               LIMIT $2);
