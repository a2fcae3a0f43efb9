"""The store: the only code that runs SQL (crmd's tables and the ERP's), with every statement in
`sql/*.sql` and the schema in `migrations/`."""
