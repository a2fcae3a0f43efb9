"""One item's work, shared by the baselines: load, build, send, record."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
import asyncpg

from crmd.config import CrmAccountSettings
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.gestaoclick import GestaoClick
from crmd.engine.sync import payload_hash
from crmd.store.sql import queries

CONTA = "default"
# The baselines' own statements: what a straightforward worker writes per item, in one
# transaction (crmd itself does the same in one call of crm_sync_settle_v2).
MAP_UPSERT = """
INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (conta, entidade, entidade_id) DO UPDATE
   SET external_id = EXCLUDED.external_id, payload_hash = EXCLUDED.payload_hash,
       sincronizado_em = now()"""
LOG_INSERT = """
INSERT INTO crm_sync_log (queue_id, conta, loja_id, entidade, entidade_id, acao, tentativa,
                          status, http_status, mensagem, external_id, requisicoes, duracao_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"""
SETTLE = """
UPDATE crm_sync_queue
   SET estado = $2, processado_em = now(), atualizado_em = now(), tentativas = tentativas + 1
 WHERE id = $1"""


@dataclass(frozen=True)
class Target:
    url: str
    access_token: str
    secret_access_token: str


class Sender:
    """A keep-alive HTTP session to the CRM and GestãoClick's payload mapping (crmd's own)."""

    def __init__(self, target: Target, concurrency: int) -> None:
        settings = CrmAccountSettings(
            base_url=target.url,
            access_token=target.access_token,
            secret_access_token=target.secret_access_token,
        )
        self.provider = GestaoClick(CONTA, settings, RateLimiter([(10**9, 1.0)]))
        self.base_url = target.url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency * 2),
            headers={
                "access-token": target.access_token,
                "secret-access-token": target.secret_access_token,
            },
        )

    async def close(self) -> None:
        await self.session.close()
        await self.provider.transport.close()

    async def sync(
        self,
        conn: asyncpg.Connection,
        loja_id: int,
        entidade: str,
        ident: int,
        queue_id: int | None = None,
    ) -> bool:
        """Send one record and record the outcome (and settle `queue_id`, when given)."""
        start = time.perf_counter()
        row = await conn.fetchrow(queries[f"load_{entidade}"], [ident])
        mapped = await conn.fetchrow(queries["map_for_keys"], [CONTA], [entidade], [ident])
        if row is None or mapped is None:
            raise RuntimeError(f"{entidade} {ident}: no ERP row or CRM id (bench data broken)")
        payload = self.provider.build(entidade, dict(row), {}).payload
        external_id = mapped["external_id"]
        url = f"{self.base_url}/{entidade}/{external_id}"
        async with self.session.put(url, json=payload) as resp:
            await resp.read()
            status = resp.status
        ok = status == 200
        async with conn.transaction():
            if ok:
                await conn.execute(
                    MAP_UPSERT,
                    CONTA,
                    entidade,
                    ident,
                    external_id,
                    payload_hash(payload),
                )
            await conn.execute(
                LOG_INSERT,
                None,
                CONTA,
                loja_id,
                entidade,
                ident,
                "upsert",
                1,
                "sucesso" if ok else "erro",
                status,
                "atualizado" if ok else f"HTTP {status}",
                external_id,
                1,
                int((time.perf_counter() - start) * 1000),
            )
            if queue_id is not None:
                await conn.execute(SETTLE, queue_id, "concluido" if ok else "falhou")
        return ok
