-- A reference ERP schema, shaped like Ecletech's tables, for the demo, the tests and the
-- benchmarks. Real installations keep their own tables and point crmd's source queries at them.
-- Applied only by `crmd migrate --with-reference-erp`.

CREATE TABLE lojas (
    id         serial PRIMARY KEY,
    nome       text        NOT NULL,
    cnpj       text,
    ativo      boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clientes (
    id              bigserial PRIMARY KEY,
    loja_id         integer     NOT NULL REFERENCES lojas (id),
    tipo_pessoa     text        NOT NULL DEFAULT 'PF' CHECK (tipo_pessoa IN ('PF', 'PJ', 'ES')),
    nome            text        NOT NULL,
    razao_social    text,
    cpf             text,
    cnpj            text,
    email           text,
    telefone        text,
    celular         text,
    data_nascimento date,
    cep             text,
    logradouro      text,
    numero          text,
    complemento     text,
    bairro          text,
    cidade          text,
    uf              text,
    ativo           boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX clientes_loja_idx ON clientes (loja_id) WHERE deleted_at IS NULL;

CREATE TABLE produtos (
    id             bigserial PRIMARY KEY,
    loja_id        integer       NOT NULL REFERENCES lojas (id),
    codigo_interno text          NOT NULL,
    nome           text          NOT NULL,
    descricao      text,
    valor_custo    numeric(14,4) NOT NULL DEFAULT 0,
    valor_venda    numeric(14,4) NOT NULL DEFAULT 0,
    estoque        numeric(14,3) NOT NULL DEFAULT 0,
    ativo          boolean       NOT NULL DEFAULT true,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    UNIQUE (loja_id, codigo_interno)
);

CREATE TABLE vendas (
    id          bigserial PRIMARY KEY,
    loja_id     integer       NOT NULL REFERENCES lojas (id),
    cliente_id  bigint        NOT NULL REFERENCES clientes (id),
    numero      text,
    data        date          NOT NULL DEFAULT current_date,
    situacao    text          NOT NULL DEFAULT 'concretizada',
    valor_total numeric(14,2) NOT NULL DEFAULT 0,
    observacoes text,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX vendas_loja_data_idx ON vendas (loja_id, data) WHERE deleted_at IS NULL;

CREATE TABLE venda_itens (
    id          bigserial PRIMARY KEY,
    venda_id    bigint        NOT NULL REFERENCES vendas (id) ON DELETE CASCADE,
    produto_id  bigint        NOT NULL REFERENCES produtos (id),
    quantidade  numeric(14,3) NOT NULL CHECK (quantidade > 0),
    valor_venda numeric(14,4) NOT NULL
);
CREATE INDEX venda_itens_venda_idx ON venda_itens (venda_id);

CREATE TABLE atividades (
    id         bigserial PRIMARY KEY,
    loja_id    integer     NOT NULL REFERENCES lojas (id),
    cliente_id bigint      REFERENCES clientes (id),
    tipo       text        NOT NULL DEFAULT 'ligacao',
    descricao  text        NOT NULL,
    data       timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

-- Producer triggers: every insert, real update and delete enqueues the record. A soft delete
-- (deleted_at set) is a delete for the CRM. TG_ARGV: entidade, prioridade.
CREATE FUNCTION erp_enqueue_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    acao text := CASE WHEN TG_OP = 'DELETE' OR NEW.deleted_at IS NOT NULL
                      THEN 'delete' ELSE 'upsert' END;
BEGIN
    PERFORM crm_enqueue(rec.loja_id, TG_ARGV[0], rec.id, TG_ARGV[1]::integer, acao);
    RETURN NULL;
END;
$$;

CREATE TRIGGER clientes_crm AFTER INSERT OR DELETE ON clientes
    FOR EACH ROW EXECUTE FUNCTION erp_enqueue_change('clientes', 3);
CREATE TRIGGER clientes_crm_upd AFTER UPDATE ON clientes
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION erp_enqueue_change('clientes', 3);
CREATE TRIGGER produtos_crm AFTER INSERT OR DELETE ON produtos
    FOR EACH ROW EXECUTE FUNCTION erp_enqueue_change('produtos', 3);
CREATE TRIGGER produtos_crm_upd AFTER UPDATE ON produtos
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION erp_enqueue_change('produtos', 3);
CREATE TRIGGER vendas_crm AFTER INSERT OR DELETE ON vendas
    FOR EACH ROW EXECUTE FUNCTION erp_enqueue_change('vendas', 5);
CREATE TRIGGER vendas_crm_upd AFTER UPDATE ON vendas
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION erp_enqueue_change('vendas', 5);
CREATE TRIGGER atividades_crm AFTER INSERT OR DELETE ON atividades
    FOR EACH ROW EXECUTE FUNCTION erp_enqueue_change('atividades', 2);
CREATE TRIGGER atividades_crm_upd AFTER UPDATE ON atividades
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION erp_enqueue_change('atividades', 2);

-- A change to a venda's items is a change to the venda.
CREATE FUNCTION erp_enqueue_venda_of_item() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    item record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    PERFORM crm_enqueue(v.loja_id, 'vendas', v.id, 5, 'upsert')
       FROM vendas v WHERE v.id = item.venda_id AND v.deleted_at IS NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER venda_itens_crm AFTER INSERT OR UPDATE OR DELETE ON venda_itens
    FOR EACH ROW EXECUTE FUNCTION erp_enqueue_venda_of_item();
