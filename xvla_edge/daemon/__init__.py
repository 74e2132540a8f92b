"""The on-robot daemon: config, cameras, supervision, health/metrics, recorder (see service.py)."""
