"""The reference ERP schema (lojas, clientes, produtos, vendas, atividades) with its enqueue
triggers, as a migration set of its own: for demos, tests and benchmarks."""

from __future__ import annotations

from crmd.store.migrate import MigrationSet

REFERENCE_ERP = MigrationSet("reference_erp", "crmd.dev", "migrations/reference_erp")
