-- crm_sync_map: which CRM record each ERP record is, per CRM account (crmd/store/mapping.py).

-- name: map_for_batch
SELECT entidade_id, external_id, payload_hash
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
-- may already exist and looks it up instead of creating a duplicate.
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
VALUES ($1, $2, $3, NULL, NULL)
ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
   SET external_id = NULL, payload_hash = NULL, sincronizado_em = now();
