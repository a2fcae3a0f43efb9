"""A development CRM server speaking the part of GestãoClick's API that crmd uses.

Modules: `server` (DevCrm, DevCrmConfig: the HTTP server, auth, limits, faults), `api` (the
resource routes), `store` (the account's records, situações and lojas), `rules` (what each
resource accepts and how it answers), `envelope` (GestãoClick's response shapes, shared with the
client), `limits`, `faults`, `ledger` (what was received, `max_in_window`) and `cli`
(`crmd dev crm`). Nothing is imported here, so importing the envelope stays cheap.
"""
