"""The CRM side: accounts, their rate limiters and HTTP transport, and one provider per CRM."""
