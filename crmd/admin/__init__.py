"""The admin surface inside the daemon: the HTTP API, Prometheus metrics and the dashboard."""
