"""The baselines crmd is measured against, each run as its own process (`python -m bench.peers.X`).

Both do per item what crmd does for an edit of a record the CRM already knows: load the ERP row
with crmd's source query, build the same GestãoClick payload, send one PUT, and record the result
(CRM id in `crm_sync_map`, a row in `crm_sync_log`) in one transaction. Only the queueing around
that work differs.
"""
