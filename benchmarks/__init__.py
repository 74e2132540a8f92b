"""X-VLA latency benchmarks against physical floors (``xvla-edge bench``; not collected by ``pytest``)."""
