-- crm_sync_map: which CRM record each ERP record is, per CRM account (crmd/store/mapping.py).

-- name: map_for_keys
-- What the map knows of the records (conta, entidade, entidade_id): a whole claimed batch, of
-- every account, in one statement.
SELECT m.conta, m.entidade, m.entidade_id, m.external_id, m.payload_hash, m.chave
  FROM crm_sync_map m
  JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS want (conta, entidade, entidade_id)
    ON m.conta = want.conta AND m.entidade = want.entidade AND m.entidade_id = want.entidade_id;

-- name: map_resolve
SELECT m.entidade, m.entidade_id, m.external_id
  FROM crm_sync_map m
  JOIN unnest($2::text[], $3::bigint[]) AS want (entidade, entidade_id)
    ON m.entidade = want.entidade AND m.entidade_id = want.entidade_id
 WHERE m.conta = $1 AND m.external_id IS NOT NULL;

-- name: map_creating
-- Committed before a POST: if we die before storing the new id, the next attempt knows a record
-- may already exist and looks it up (by $4, its natural key) instead of creating a duplicate.
-- Several records at once ($1..$4 arrays of one length, one row per record).
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash, chave)
SELECT t.conta, t.entidade, t.entidade_id, NULL, NULL, t.chave
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
       AS t (conta, entidade, entidade_id, chave)
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

-- name: map_import_stage
-- `crmd map import`, step 1: the rows of the import query (configuration or the operator's
-- --query, spliced in by crmd/store/mapping.py) staged as text in a temporary table of this
-- transaction. Read through to_jsonb so the optional `loja_id` may be absent from the query and
-- any column type (integer, numeric, text) arrives as its text. No parameters: PostgreSQL takes
-- none in CREATE TABLE AS.
CREATE TEMP TABLE crmd_map_import ON COMMIT DROP AS
SELECT r.j ->> 'id' AS id_text,
       NULLIF(btrim(r.j ->> 'external_id'), '') AS external_id,
       r.j ->> 'loja_id' AS loja_text
  FROM (SELECT to_jsonb(s) AS j FROM (
/*listing*/
       ) AS s) AS r;

-- name: map_import_apply
-- Step 2: judge each staged row and link the new ones, in one statement. $1 entidade; $2, $3 the
-- lojas with CRM accounts of their own and those accounts' names (every other loja is account
-- 'default', as the engine names them); $4 whether rows need a loja_id (some lojas have accounts
-- of their own); $5 dry run (judge, write nothing); $6 how many examples of each problem to
-- return. A row is linked only when neither side is linked already: an ERP record linked to
-- another CRM record is kept as it is ('divergente'), and a CRM record linked to another ERP
-- record is not linked twice ('ocupado'); a create in doubt (a marker without a CRM id) is
-- resolved by the imported id. Pairs repeated in the query count once; an ERP record with two
-- CRM ids, or a CRM id for two ERP records, is ambiguous ('duplicado') and left alone. Links are
-- written without a payload hash, so the first run sends each record once (a PUT). Returns one
-- row per verdict: how many, examples, and how many links were written.
WITH typed AS (
    SELECT DISTINCT id_text, external_id, loja_text,
           CASE WHEN id_text ~ '^[0-9]{1,18}$' THEN id_text::bigint END AS entidade_id,
           CASE WHEN loja_text ~ '^[0-9]{1,9}$' THEN loja_text::integer END AS loja_id
      FROM pg_temp.crmd_map_import
), keyed AS (
    SELECT t.*,
           COALESCE((SELECT a.conta FROM unnest($2::integer[], $3::text[]) AS a (loja, conta)
                      WHERE a.loja = t.loja_id), 'default') AS conta
      FROM typed t
), counted AS (
    SELECT k.*,
           count(*) OVER (PARTITION BY k.conta, k.entidade_id) AS per_record,
           count(*) OVER (PARTITION BY k.conta, k.external_id) AS per_crm_record
      FROM keyed k
), judged AS (
    SELECT c.*, m.external_id AS linked_to, o.entidade_id AS owner,
           CASE
               WHEN c.entidade_id IS NULL THEN 'id_invalido'
               WHEN c.external_id IS NULL OR c.external_id !~ '^[0-9]{1,18}$'
                   THEN 'external_id_invalido'
               WHEN $4::boolean AND c.loja_id IS NULL THEN 'sem_loja'
               WHEN c.per_record > 1 OR c.per_crm_record > 1 THEN 'duplicado'
               WHEN m.external_id = c.external_id THEN 'igual'
               WHEN m.external_id IS NOT NULL THEN 'divergente'
               WHEN o.entidade_id IS NOT NULL THEN 'ocupado'
               ELSE 'novo'
           END AS verdict
      FROM counted c
      LEFT JOIN crm_sync_map m
        ON m.conta = c.conta AND m.entidade = $1 AND m.entidade_id = c.entidade_id
      LEFT JOIN crm_sync_map o
        ON o.conta = c.conta AND o.entidade = $1 AND o.external_id = c.external_id
       AND o.entidade_id <> c.entidade_id
), written AS (
    INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
    SELECT conta, $1, entidade_id, external_id, NULL
      FROM judged
     WHERE verdict = 'novo' AND NOT $5::boolean
    ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
       SET external_id = EXCLUDED.external_id, payload_hash = NULL, chave = NULL,
           sincronizado_em = now()
     WHERE crm_sync_map.external_id IS NULL
    RETURNING 1
)
SELECT verdict, count(*) AS n,
       (array_agg(json_build_object('id', id_text, 'external_id', external_id,
                                    'loja_id', loja_text, 'conta', conta,
                                    'linked_to', linked_to, 'owner', owner)::text
                  ORDER BY id_text) FILTER (WHERE verdict NOT IN ('novo', 'igual')))[1:$6]
           AS examples,
       (SELECT count(*) FROM written) AS written
  FROM judged
 GROUP BY verdict;
