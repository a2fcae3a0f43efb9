"""The service around the engine: the daemon (signals, reload, supervision), startup, the
LISTEN wake-up, timers, systemd notification and logs."""
