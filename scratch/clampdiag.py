import sys, numpy as np
from pathlib import Path
from runtime.policy import Policy
import xvla_edge.sim.evaluate as ev
from drivers.control_loop import ControlLoop
bundle = Path(sys.argv[1])
cfg = ev.sim_config(bundle); lc = cfg.loop_config()
print(lc)
pol = Policy.load(bundle)
log = []
orig_tick, orig_submit = ControlLoop.tick, ControlLoop.submit
def tick(self, now):
    before = dict(self.interventions.as_dict())
    r = orig_tick(self, now)
    after = self.interventions.as_dict()
    log.append((now, {k: after[k] - before.get(k, 0) for k in after if k != "commands" and after[k] != before.get(k, 0)}))
    return r
subs = []
def submit(self, traj, obs_t, now):
    subs.append(now); return orig_submit(self, traj, obs_t, now)
ControlLoop.tick, ControlLoop.submit = tick, submit
for seed in range(int(sys.argv[2])):
    log.clear(); subs.clear()
    r = ev.run_virtual(pol, seed, "random", lc)
    kinds = {}
    phase = np.zeros(10)
    for t, d in log:
        for k, v in d.items(): kinds[k] = kinds.get(k, 0) + v
        if d:
            prev = max([s for s in subs if s <= t], default=None)
            if prev is not None: phase[min(int((t - prev) / 0.05), 9)] += 1
    print(seed, r.outcome, r.seconds, r.clamps, kinds, "ticks after submit (50ms bins):", phase.astype(int), "submits", len(subs))
