"""crmd: keeps a CRM in step with an ERP's PostgreSQL outbox queue."""

__version__ = "0.1.0"
