"""`crmd dev seed`: realistic Brazilian sample data for the reference ERP schema, in bulk.

Rows are built in Python from one `random.Random` (same seed, same data) with ids drawn from the
tables' own sequences first, so the links venda -> cliente and item -> produto are known without
RETURNING and every table goes in by COPY. All of it runs in one transaction, so a failure leaves
no half-seeded loja. The ERP's triggers fire per row and enqueue each record, as real writes would.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal

import asyncpg

from crmd.dev import seed_data as data

Row = tuple[object, ...]


def _columns(names: str) -> tuple[str, ...]:
    return tuple(names.split())


# COPY column lists, in the order the row builders below emit their tuples.
CLIENTE_COLUMNS = _columns(
    "id loja_id tipo_pessoa nome razao_social cpf cnpj email telefone celular data_nascimento "
    "cep logradouro numero complemento bairro cidade uf ativo"
)
PRODUTO_COLUMNS = _columns(
    "id loja_id codigo_interno nome descricao valor_custo valor_venda estoque"
)
VENDA_COLUMNS = _columns("id loja_id cliente_id numero data situacao valor_total")
ITEM_COLUMNS = _columns("venda_id produto_id quantidade valor_venda")

PJ_SHARE = 0.30
INACTIVE_SHARE = 0.05
HOME_CITY_SHARE = 0.80  # most of a loja's clientes live in the loja's own city
VENDAS_DAYS = 90


# --- CPF and CNPJ -------------------------------------------------------------------------------


def only_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _mod11_digit(digits: Sequence[int], max_weight: int) -> int:
    """Receita Federal's mod-11 digit: weights 2, 3, ... from the right, wrapping at max_weight."""
    total = sum(d * (2 + i % (max_weight - 1)) for i, d in enumerate(reversed(digits)))
    rest = total % 11
    return 0 if rest < 2 else 11 - rest


def _check_digits(base: str, length: int, max_weight: int) -> str:
    if len(base) != length or not base.isdigit():
        raise ValueError(f"expected {length} digits, got {base!r}")
    digits = [int(ch) for ch in base]
    first = _mod11_digit(digits, max_weight)
    second = _mod11_digit([*digits, first], max_weight)
    return f"{first}{second}"


def cpf_check_digits(base: str) -> str:
    """The two check digits of a CPF's first nine digits."""
    return _check_digits(base, 9, max_weight=11)


def cnpj_check_digits(base: str) -> str:
    """The two check digits of a CNPJ's first twelve digits (root and branch)."""
    return _check_digits(base, 12, max_weight=9)


def valid_cpf(text: str) -> bool:
    """Formatted or digits only; repeated digits (111.111.111-11) pass the sum but are invalid."""
    d = only_digits(text)
    return len(d) == 11 and len(set(d)) > 1 and cpf_check_digits(d[:9]) == d[9:]


def valid_cnpj(text: str) -> bool:
    d = only_digits(text)
    return len(d) == 14 and len(set(d)) > 1 and cnpj_check_digits(d[:12]) == d[12:]


def format_cpf(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"


def format_cnpj(digits: str) -> str:
    return f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}/{digits[8:12]}-{digits[12:]}"


def format_cep(cep: int) -> str:
    return f"{cep // 1000:05d}-{cep % 1000:03d}"


def _slug(text: str) -> str:
    """ASCII lower-case without spaces, for the local part and domain of an email address."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum())


def _money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


# --- row builders -------------------------------------------------------------------------------


class _Faker:
    """Draws every value from one Random, and keeps CPFs, CNPJs and emails unique within a run."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._documents: set[str] = set()
        self._emails: dict[str, int] = {}

    def cpf(self) -> str:
        while True:
            base = f"{self.rng.randrange(10**9):09d}"
            if len(set(base)) > 1 and base not in self._documents:
                self._documents.add(base)
                return format_cpf(base + cpf_check_digits(base))

    def cnpj_root(self) -> str:
        while True:
            root = f"{self.rng.randrange(10**8):08d}"
            if len(set(root)) > 1 and root not in self._documents:
                self._documents.add(root)
                return root

    def cnpj(self, root: str | None = None, branch: int = 1) -> str:
        base = f"{root or self.cnpj_root()}{branch:04d}"
        return format_cnpj(base + cnpj_check_digits(base))

    def email(self, local: str, domain: str) -> str:
        # A counter after "_" cannot collide with another base: bases never contain "_".
        address = f"{local}@{domain}"
        seen = self._emails.get(address)
        self._emails[address] = (seen or 1) + 1
        return address if seen is None else f"{local}_{seen}@{domain}"

    def mobile(self, city: data.City) -> str:
        return f"({city.ddd}) 9{self.rng.randint(6000, 9999)}-{self.rng.randrange(10000):04d}"

    def landline(self, city: data.City) -> str:
        return f"({city.ddd}) {self.rng.randint(2000, 5999)}-{self.rng.randrange(10000):04d}"

    def address(self, city: data.City) -> Row:
        rng = self.rng
        return (
            format_cep(rng.randint(city.cep_min, city.cep_max)),
            f"{rng.choice(data.STREET_TYPES)} {rng.choice(data.STREET_NAMES)}",
            str(rng.randint(1, 3999)),
            rng.choice(data.COMPLEMENTS) if rng.random() < 0.25 else None,
            rng.choice(data.BAIRROS),
            city.nome,
            city.uf,
        )

    def cliente(self, cliente_id: int, loja_id: int, home: data.City, today: date) -> Row:
        rng = self.rng
        city = home if rng.random() < HOME_CITY_SHARE else rng.choice(data.CITIES)
        ativo = rng.random() >= INACTIVE_SHARE
        if rng.random() >= PJ_SHARE:
            first, middle, last = (
                rng.choice(data.FIRST_NAMES),
                rng.choice(data.LAST_NAMES),
                rng.choice(data.LAST_NAMES),
            )
            nome = f"{first} {middle} {last}" if middle != last else f"{first} {last}"
            number = str(rng.randint(1, 99)) if rng.random() < 0.5 else ""
            email = self.email(
                f"{_slug(first)}.{_slug(last)}{number}", rng.choice(data.EMAIL_DOMAINS)
            )
            born = today - timedelta(days=rng.randint(18 * 365, 80 * 365))
            telefone = self.landline(city) if rng.random() < 0.3 else None
            return (
                cliente_id,
                loja_id,
                "PF",
                nome,
                None,
                self.cpf(),
                None,
                email,
                telefone,
                self.mobile(city),
                born,
                *self.address(city),
                ativo,
            )
        business = rng.choice(data.BUSINESSES)
        if rng.random() < 0.5:
            trade = rng.choice(data.COMPANY_NAMES)
        else:
            trade = f"{rng.choice(data.LAST_NAMES)} & {rng.choice(data.LAST_NAMES)}"
        nome = f"{trade} {business}"
        razao_social = f"{nome} {rng.choice(data.COMPANY_SUFFIXES)}"
        email = self.email("contato", f"{_slug(trade)}{_slug(business)[:12]}.com.br")
        celular = self.mobile(city) if rng.random() < 0.5 else None
        return (
            cliente_id,
            loja_id,
            "PJ",
            nome,
            razao_social,
            None,
            self.cnpj(),
            email,
            self.landline(city),
            celular,
            None,
            *self.address(city),
            ativo,
        )

    def produto(self, produto_id: int, loja_id: int, index: int) -> tuple[Row, int]:
        """The row and its price in cents, which the vendas' items reuse."""
        rng = self.rng
        kind = rng.choice(data.PRODUCT_KINDS)
        variant, brand = rng.choice(kind.variants), rng.choice(data.BRANDS)
        venda = rng.randint(kind.price_min_cents, kind.price_max_cents)
        custo = max(1, min(venda - 1, round(venda * rng.uniform(0.45, 0.8))))
        descricao = f"{kind.nome} {variant}, marca {brand}." if rng.random() < 0.6 else None
        row = (
            produto_id,
            loja_id,
            f"L{loja_id}-{index + 1:06d}",  # unique across lojas: one CRM account sees all
            f"{kind.nome} {variant} {brand}",
            descricao,
            _money(custo),
            _money(venda),
            Decimal(rng.randint(0, 500)),
        )
        return row, venda


# --- the command ------------------------------------------------------------------------------


def _validate(lojas: int, clientes: int, produtos: int, vendas: int) -> None:
    for name, value in (
        ("lojas", lojas),
        ("clientes", clientes),
        ("produtos", produtos),
        ("vendas", vendas),
    ):
        if value < 0:
            raise ValueError(f"--{name} deve ser zero ou mais, não {value}")
    if vendas > 0 and clientes == 0:
        raise ValueError("--clientes deve ser mais que zero quando há vendas")
    if vendas > 0 and produtos == 0:
        raise ValueError("--produtos deve ser mais que zero quando há vendas")


async def _allocate_ids(conn: asyncpg.Connection, table: str, n: int) -> list[int]:
    """Draws n ids from the table's own sequence, safe beside concurrent inserts."""
    if n == 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2)", table, n
    )
    return [r[0] for r in rows]


async def seed(
    conn: asyncpg.Connection,
    *,
    lojas: int,
    clientes: int,
    produtos: int,
    vendas: int,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Create `lojas` new lojas, each with `clientes`, `produtos` and `vendas` of its own.

    Returns the counts inserted, items included; `progress` gets the running count of records
    (lojas, clientes, produtos, vendas) after each loja. Raises ValueError for impossible
    arguments.
    """
    _validate(lojas, clientes, produtos, vendas)
    fake = _Faker(random.Random(seed))
    sizes = {"clientes": clientes, "produtos": produtos, "vendas": vendas}
    counts = {"lojas": lojas, "clientes": 0, "produtos": 0, "vendas": 0, "itens": 0}
    async with conn.transaction():
        today: date = await conn.fetchval("SELECT current_date")
        root = fake.cnpj_root()  # one company, its lojas are branches 0001, 0002, ...
        loja_rows = [
            (loja_id, _loja_name(i), fake.cnpj(root, i + 1))
            for i, loja_id in enumerate(await _allocate_ids(conn, "lojas", lojas))
        ]
        await conn.copy_records_to_table("lojas", records=loja_rows, columns=("id", "nome", "cnpj"))
        for loja_id, _, _ in loja_rows:
            added = await _seed_loja(conn, fake, loja_id, today, **sizes)
            for what, n in added.items():
                counts[what] += n
            if progress is not None:
                progress(sum(n for what, n in counts.items() if what != "itens"))
    return counts


def _loja_name(index: int) -> str:
    name = data.LOJA_NAMES[index % len(data.LOJA_NAMES)]
    rounds = index // len(data.LOJA_NAMES)
    return f"{name} {rounds + 1}" if rounds else name


async def _seed_loja(
    conn: asyncpg.Connection,
    fake: _Faker,
    loja_id: int,
    today: date,
    *,
    clientes: int,
    produtos: int,
    vendas: int,
) -> dict[str, int]:
    rng = fake.rng
    home = rng.choice(data.CITIES)
    cliente_ids = await _allocate_ids(conn, "clientes", clientes)
    records: Iterator[Row] = (fake.cliente(cid, loja_id, home, today) for cid in cliente_ids)
    await conn.copy_records_to_table("clientes", records=records, columns=CLIENTE_COLUMNS)

    produto_ids = await _allocate_ids(conn, "produtos", produtos)
    built = [fake.produto(pid, loja_id, i) for i, pid in enumerate(produto_ids)]
    await conn.copy_records_to_table(
        "produtos", records=[row for row, _ in built], columns=PRODUTO_COLUMNS
    )
    prices = [cents for _, cents in built]

    venda_ids = await _allocate_ids(conn, "vendas", vendas)
    venda_rows, item_rows = _vendas(
        rng, loja_id, today, venda_ids, cliente_ids, produto_ids, prices
    )
    await conn.copy_records_to_table("vendas", records=venda_rows, columns=VENDA_COLUMNS)
    await conn.copy_records_to_table("venda_itens", records=item_rows, columns=ITEM_COLUMNS)
    return {"clientes": clientes, "produtos": produtos, "vendas": vendas, "itens": len(item_rows)}


def _vendas(
    rng: random.Random,
    loja_id: int,
    today: date,
    venda_ids: list[int],
    cliente_ids: list[int],
    produto_ids: list[int],
    prices: list[int],
) -> tuple[list[Row], list[Row]]:
    """A loja's vendas and their items: distinct produtos of the same loja, totals to the cent."""
    venda_rows: list[Row] = []
    item_rows: list[Row] = []
    # Dates first, sorted, so a loja's venda numbers grow with time as in a real ERP.
    dates = sorted(today - timedelta(days=rng.randrange(VENDAS_DAYS)) for _ in venda_ids)
    for i, (venda_id, day) in enumerate(zip(venda_ids, dates, strict=True)):
        n_items = min(rng.choices((1, 2, 3, 4, 5), weights=(30, 25, 20, 15, 10))[0], len(prices))
        total = 0
        for p in rng.sample(range(len(prices)), n_items):
            quantidade = rng.choices((1, 2, 3, 4, 5, 10), weights=(50, 20, 10, 8, 7, 5))[0]
            total += quantidade * prices[p]
            item_rows.append((venda_id, produto_ids[p], Decimal(quantidade), _money(prices[p])))
        cliente_id = cliente_ids[rng.randrange(len(cliente_ids))]
        number = f"{i + 1:06d}"
        venda_rows.append(
            (venda_id, loja_id, cliente_id, number, day, "concretizada", _money(total))
        )
    return venda_rows, item_rows
