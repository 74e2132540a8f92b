"""The on-robot daemon: cameras → policy → control loop, watched by health, metrics, recorder and systemd.

Three kinds of work run side by side:

- the **control loop** in its own process (:mod:`drivers.control.loop_process`): streams the executing chunk at the
  control rate through the safety envelope, holds when no fresh trajectory covers now, pings the systemd
  watchdog from its tick;
- **inference** on a worker thread (:meth:`runtime.policy.Policy.act_async`): the next chunk is started when
  the executing one has ``inference.start_fraction`` of its span left, so in steady state the arm never
  waits for the model; each chunk carries the time stamp of its observation (the oldest camera frame),
  and the control loop splices it in at its latency;
- this **supervisor** (the caller's thread, :meth:`Daemon.run`): polls the loop's state at ``POLL_S``,
  checks camera ages, starts and collects inference, updates metrics and health, feeds the recorder.

Safe states: a stale camera (no frame younger than its ``max_age_s``) → the loop drops the executing chunk
and holds, and no inference starts until every camera is fresh again; an inference stall → the chunk runs
out and the watchdog holds; a link loss → the loop sends nothing (the controller's own deadman holds) and
the supervisor asks it to reconnect every ``RECONNECT_S``; a policy server (``[policy]``) out of reach or
too slow → hold at once, and a new attempt every ``RECONNECT_S`` until it answers (an outage, however long,
is not a fault that ends the daemon); SIGTERM/SIGINT → :meth:`Daemon.close` stops the
loop, which holds the arm before the process exits (during start-up: start-up stops at the next phase).
Faults (and stale cameras, inference errors) dump the recorder when ``recorder.on_fault`` is set.

The :class:`Daemon` is composed of its parts, one module each: the supervisor
(:mod:`~xvla_edge.daemon.supervisor`: start-up, the passes, faults and the exit codes they end in), the
operator commands (:mod:`~xvla_edge.daemon.operator`: ``ctl`` commands and the e-stop's fast path) and the
views (:mod:`~xvla_edge.daemon.views`: status, series, camera frames, health, summary), over the state they
share (:mod:`~xvla_edge.daemon.state`: its locks).
"""

from __future__ import annotations

from xvla_edge.daemon.operator import OperatorCommands
from xvla_edge.daemon.supervisor import Supervisor
from xvla_edge.daemon.views import StatusViews


class Daemon(Supervisor, OperatorCommands, StatusViews):
    """One robot's daemon. ``start`` → ``run`` (until ``stop`` is set or ``duration`` passes) → ``close``;
    constructed as :class:`~xvla_edge.daemon.state.DaemonState`."""
