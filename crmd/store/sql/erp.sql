-- The ERP side: how crmd reads the reference ERP schema (crmd/store/erp.py). A real installation
-- replaces any of these in [sources] to read its own tables; the README's "Source queries" says
-- what each must return.

-- name: load_clientes
-- load_<entidade>: the rows of the records whose ids are in $1, with the columns the provider
-- maps. A record missing from the result is treated as deleted in the ERP.
SELECT c.id, c.loja_id, c.tipo_pessoa, c.nome, c.razao_social, c.cpf, c.cnpj, c.email,
       c.telefone, c.celular, c.data_nascimento, c.ativo, c.cep, c.logradouro, c.numero,
       c.complemento, c.bairro, c.cidade, c.uf
  FROM clientes c
 WHERE c.id = ANY($1::bigint[]) AND c.deleted_at IS NULL;

-- name: load_produtos
SELECT p.id, p.loja_id, p.codigo_interno, p.nome, p.descricao, p.valor_custo, p.valor_venda,
       p.estoque, p.ativo
  FROM produtos p
 WHERE p.id = ANY($1::bigint[]) AND p.deleted_at IS NULL;

-- name: load_vendas
-- Items come as one JSON array per venda, so a batch of vendas is still one query. `situacao` is
-- the ERP's own value, mapped to the account's id by [crm.situacoes].
SELECT v.id, v.loja_id, v.cliente_id, v.data, v.situacao, v.observacoes, v.valor_total,
       COALESCE((SELECT json_agg(json_build_object('produto_id', i.produto_id,
                                                   'quantidade', i.quantidade,
                                                   'valor_venda', i.valor_venda) ORDER BY i.id)
                   FROM venda_itens i WHERE i.venda_id = v.id), '[]'::json) AS itens
  FROM vendas v
 WHERE v.id = ANY($1::bigint[]) AND v.deleted_at IS NULL;

-- name: load_atividades
SELECT a.id, a.loja_id, a.cliente_id, a.tipo, a.descricao, a.data
  FROM atividades a
 WHERE a.id = ANY($1::bigint[]) AND a.deleted_at IS NULL;

-- name: list_clientes
-- list_<entidade>: every record `crmd enqueue` and the full sync enqueue, as (loja_id, id,
-- data), with no parameters; crmd adds the loja, date and keyset filters around it (queue.sql
-- enqueue_listed). `data` is what --since filters on: the last change of clientes and produtos,
-- the date of vendas and atividades.
SELECT loja_id, id, updated_at AS data FROM clientes WHERE ativo AND deleted_at IS NULL

-- name: list_produtos
SELECT loja_id, id, updated_at AS data FROM produtos WHERE ativo AND deleted_at IS NULL

-- name: list_vendas
SELECT loja_id, id, data FROM vendas WHERE deleted_at IS NULL

-- name: list_atividades
SELECT loja_id, id, data FROM atividades WHERE deleted_at IS NULL

-- name: list_lojas
-- Every loja's id (the per-loja counts of `crmd enqueue`).
SELECT id FROM lojas

-- name: lojas_all
-- The lojas of a listing (list_lojas or [sources] lojas, spliced in), in id order.
SELECT l.id::integer AS id FROM (
/*listing*/
) AS l ORDER BY l.id;

-- name: lojas_existing
SELECT l.id::integer AS id FROM (
/*listing*/
) AS l WHERE l.id = ANY($1::integer[]) ORDER BY l.id;

-- name: listing_probe
-- `crmd doctor`: whether a listing query (spliced in: [sources] <entidade>_enqueue or lojas,
-- [map_import] <entidade>) runs, and which columns it gives; LIMIT 0 reads no row.
SELECT * FROM (
/*listing*/
) AS s LIMIT 0;

-- name: plan_listed
-- `crmd plan --full`: what `crmd enqueue` would put in the queue, read only: the records a
-- listing query (spliced in) names, in id order after $1, at most $2, of lojas $3 (NULL: every
-- loja), dated within $4 days (NULL: any date); as enqueue_listed in queue.sql filters them.
SELECT s.loja_id::integer AS loja_id, s.id::bigint AS id
  FROM (
/*listing*/
       ) AS s
 WHERE s.id > $1::bigint
   AND ($3::integer[] IS NULL OR s.loja_id = ANY($3::integer[]))
   AND ($4::integer IS NULL OR s.data >= current_date - $4::integer)
 ORDER BY s.id
 LIMIT $2;
