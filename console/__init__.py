"""The admin console: a REST API, a server-rendered dashboard and /metrics (never imports torch)."""
