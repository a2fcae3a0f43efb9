-- Guards on crm_sync_map: one ERP record per CRM record, and what a create in doubt was about.

-- The natural key (CPF/CNPJ, codigo) a create was about, written with its marker before the
-- POST: a later delete of a record whose create is in doubt looks the CRM record up by it, even
-- when the ERP row is gone.
ALTER TABLE crm_sync_map ADD COLUMN chave text;

-- Creates whose outcome is unknown (the marker without an id): few, read by `crmd status`.
CREATE INDEX crm_sync_map_uncertain_idx ON crm_sync_map (conta, entidade, entidade_id)
    WHERE external_id IS NULL;

-- A CRM record belongs to one ERP record per account: two ERP clientes with the same CPF must
-- not both be linked to (and overwrite) one CRM cliente. An installation that already holds such
-- twins keeps running without the index (a warning says so; the engine still checks before
-- linking) until a person has untangled them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM crm_sync_map WHERE external_id IS NOT NULL
                GROUP BY conta, entidade, external_id HAVING count(*) > 1) THEN
        RAISE WARNING 'crm_sync_map links some CRM records to several ERP records; '
                      'crm_sync_map_external_key not created';
    ELSE
        CREATE UNIQUE INDEX crm_sync_map_external_key ON crm_sync_map (conta, entidade, external_id)
            WHERE external_id IS NOT NULL;
    END IF;
END;
$$;
