-- Default source queries: how crmd reads a record of the reference ERP schema. Each takes $1, an
-- array of ids, and returns one row per record found, with the columns the provider maps (see
-- README "Source queries"). A real installation overrides them in [sources] to read its own
-- tables; a record missing from the result is treated as deleted in the ERP.

-- name: clientes
SELECT c.id, c.loja_id, c.tipo_pessoa, c.nome, c.razao_social, c.cpf, c.cnpj, c.email,
       c.telefone, c.celular, c.data_nascimento, c.ativo, c.cep, c.logradouro, c.numero,
       c.complemento, c.bairro, c.cidade, c.uf
  FROM clientes c
 WHERE c.id = ANY($1::bigint[]) AND c.deleted_at IS NULL;

-- name: produtos
SELECT p.id, p.loja_id, p.codigo_interno, p.nome, p.descricao, p.valor_custo, p.valor_venda,
       p.estoque, p.ativo
  FROM produtos p
 WHERE p.id = ANY($1::bigint[]) AND p.deleted_at IS NULL;

-- name: vendas
-- Items come as one JSON array per venda, so a batch of vendas is still one query.
SELECT v.id, v.loja_id, v.cliente_id, v.data, v.observacoes, v.valor_total,
       COALESCE((SELECT json_agg(json_build_object('produto_id', i.produto_id,
                                                   'quantidade', i.quantidade,
                                                   'valor_venda', i.valor_venda) ORDER BY i.id)
                   FROM venda_itens i WHERE i.venda_id = v.id), '[]'::json) AS itens
  FROM vendas v
 WHERE v.id = ANY($1::bigint[]) AND v.deleted_at IS NULL;

-- name: atividades
SELECT a.id, a.loja_id, a.cliente_id, a.tipo, a.descricao, a.data
  FROM atividades a
 WHERE a.id = ANY($1::bigint[]) AND a.deleted_at IS NULL;
