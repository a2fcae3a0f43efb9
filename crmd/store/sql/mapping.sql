-- crm_sync_map: which CRM record each ERP record is, per CRM account (crmd/store/mapping.py).

-- name: map_for_batch
SELECT entidade_id, external_id, payload_hash, chave
  FROM crm_sync_map
 WHERE conta = $1 AND entidade = $2 AND entidade_id = ANY($3::bigint[]);

-- name: map_resolve
SELECT m.entidade, m.entidade_id, m.external_id
  FROM crm_sync_map m
  JOIN unnest($2::text[], $3::bigint[]) AS want (entidade, entidade_id)
    ON m.entidade = want.entidade AND m.entidade_id = want.entidade_id
 WHERE m.conta = $1 AND m.external_id IS NOT NULL;

-- name: map_creating
-- Committed before a POST: if we die before storing the new id, the next attempt knows a record
-- may already exist and looks it up (by $4, its natural key) instead of creating a duplicate.
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash, chave)
VALUES ($1, $2, $3, NULL, NULL, $4)
ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
   SET external_id = NULL, payload_hash = NULL, chave = EXCLUDED.chave, sincronizado_em = now();

-- name: map_not_created
-- The create the marker was for did not happen (the CRM refused it, or never got it): forget
-- the marker, so the next attempt need not look the record up.
DELETE FROM crm_sync_map
 WHERE conta = $1 AND entidade = $2 AND entidade_id = $3 AND external_id IS NULL;

-- name: map_owner
-- Which ERP record a CRM record is linked to already (unique index crm_sync_map_external_key).
SELECT entidade_id FROM crm_sync_map
 WHERE conta = $1 AND entidade = $2 AND external_id = $3;

-- name: map_uncertain
-- Creates whose outcome nobody knows: the marker written before a POST, with no item of the
-- record left to resolve it (partial index crm_sync_map_uncertain_idx). A person must check.
SELECT m.conta, m.entidade, m.entidade_id, m.chave, m.sincronizado_em
  FROM crm_sync_map m
 WHERE m.external_id IS NULL
   AND NOT EXISTS (SELECT 1 FROM crm_sync_queue q
                    WHERE q.estado IN ('pendente', 'processando')
                      AND q.entidade = m.entidade AND q.entidade_id = m.entidade_id)
 ORDER BY m.sincronizado_em DESC
 LIMIT $1;
