"""xvla-edge's application layer: the ``xvla-edge`` command line, the on-robot daemon and the demo.

Above the libraries (:mod:`xvla`, :mod:`export`, :mod:`runtime`, :mod:`drivers`, :mod:`calibration`,
:mod:`benchmarks`) and imported by none of them:

- :mod:`xvla_edge.cli`: the dispatcher; :mod:`xvla_edge.commands`: one module per command.
- :mod:`xvla_edge.daemon`: ``xvla-edge run`` — robot.toml, cameras, the supervisor beside the control-loop
  process, health and metrics, recorder, systemd.
"""
