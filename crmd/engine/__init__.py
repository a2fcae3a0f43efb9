"""The sync engine: claim items, load their rows, send them to the CRM, record each outcome."""
