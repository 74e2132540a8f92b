"""X-VLA latency benchmarks against physical floors (``xvla-edge bench``; not collected by ``pytest``).

:mod:`benchmarks.names` (sizes, backends, stages), :mod:`benchmarks.suites` (running the latency suite),
:mod:`benchmarks.report` (the results files), :mod:`benchmarks.floor` (work and floors), :mod:`benchmarks.harness`
and ``conftest.py`` (the suites' plumbing), :mod:`benchmarks.official` and :mod:`benchmarks.official_runner`
(the official implementation beside ours). Imports nothing: the official interpreter imports this package too.
"""
