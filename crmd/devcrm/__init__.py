"""A development CRM server speaking the part of GestãoClick's API that crmd uses."""
