"""OS plumbing for the control-loop process: absolute-deadline sleep, SCHED_FIFO and period statistics
(:mod:`.realtime`), and the systemd notify protocol (:mod:`.sdnotify`). Standard library only: it imports
nothing else of ``drivers/``, so any room may use it.
"""
