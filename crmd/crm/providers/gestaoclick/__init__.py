"""GestãoClick, as its API really behaves (see DESIGN.md, "The CRM: GestãoClick first").

Modules: `provider` (the operations, verified lookups, the account's situações and lojas, a
probe of a base URL), `payloads` (ERP rows as complete payloads), `fields` (documented fields a
source query may add) and `answers` (the envelope read: data, pages, errors).

How a venda is proven to be ours. GestãoClick numbers vendas itself (1, 2, 3... per account) and
an account in use already holds such numbers, so the ERP's id cannot be a venda's identity: ERP
venda 795 would find the account's own venda 795, of another cliente, and overwrite it. crmd
therefore sends its own `codigo`, `[crm] venda_codigo_prefix` + the ERP id ("crmd-795"). A prefix
must hold a non-digit, so no number GestãoClick gives can ever equal it; a lookup
(`GET /vendas?codigo=crmd-795`) then links only a venda whose returned `codigo` equals ours
exactly, whatever the filter matched. Of the two options this one keeps the lookup, which is what
stops a create whose answer was lost from making the venda twice. With an empty prefix crmd sends
no `codigo` (GestãoClick numbers the venda) and never looks a venda up: nothing of somebody else's
can be linked, at the price of a possible second venda after a lost answer. The account's own
numbering is not taken over: vendas crmd sends carry its codes, vendas made in GestãoClick keep
their numbers.

The other keys are checked on the record too: a cliente's CPF/CNPJ as digits (the `cpf_cnpj`
filter covers both fields), a produto's `codigo_interno` exactly (filtered as `codigo`).
"""

from __future__ import annotations

from crmd.crm.providers.gestaoclick.provider import (
    KNOWN_BASE_URLS,
    GestaoClick,
    Loja,
    Situacao,
)

__all__ = ["KNOWN_BASE_URLS", "GestaoClick", "Loja", "Situacao"]
