"""Development tools, outside the product's path: the development CRM (`devcrm/`), sample data
(`seed`), the `make run` demo (`demo`) and the reference ERP schema (`migrations/`).

The daemon never imports this package; only the `crmd dev ...` commands and the tests do.
"""
