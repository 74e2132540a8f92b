"""Roughness of predicted chunks: RMS of second differences / DT^2 (m/s^2), first observations and mid-episode."""
import sys; sys.path.insert(0, "/tmp/proto")
import numpy as np, torch
from probe import *
from xvla_edge.sim import expert
ck = sys.argv[1]
model = load_checkpoint(ck); tok = TextTokenizer(ck); proc = ImageProcessor.from_dir(ck)
obs = first_obs(range(32), "random", 64)
ids = torch.from_numpy(np.stack([tok(o[0].instruction) for o in obs]))
images = torch.from_numpy(np.stack([o[2] for o in obs])).permute(0, 1, 4, 2, 3).float()
mean = torch.tensor(proc.mean).view(1, 1, 3, 1, 1); std = torch.tensor(proc.std).view(1, 1, 3, 1, 1)
B = len(obs); pixels = torch.zeros(B, 3, 3, 64, 64); pixels[:, :2] = (images * proc.rescale_factor - mean) / std
mask = torch.zeros(B, 3, dtype=torch.bool); mask[:, :2] = True
from xvla.rotations import quat_to_rot6d
prop = torch.zeros(B, 20); prop[:, :3] = torch.tensor(np.stack([o[1] for o in obs]), dtype=torch.float32)
prop[:, 3:9] = torch.tensor(quat_to_rot6d(GRASP_QUAT)); prop[:, 9] = 1.0
DT = 1 / 30
for steps in (10,):
    act = model.generate_actions(ids, pixels, mask, torch.full((B,), 3), prop, steps=steps).numpy()[..., :3]
    acc = np.diff(act, 2, axis=1) / DT**2
    print("model steps", steps, "rms accel %.2f, p95 %.2f, max %.2f m/s^2" % (np.sqrt((acc**2).sum(-1).mean()), np.percentile(np.linalg.norm(acc, axis=-1), 95), np.linalg.norm(acc, axis=-1).max()))
    print("first-waypoint offset from start (mm): median %.1f" % (1000 * np.median(np.linalg.norm(act[:, 0] - prop[:, :3].numpy(), axis=-1))))
ex = []
for scene, start, _ in obs:
    t = Tabletop(scene); t.update(start, GRASP_QUAT, 1.0)
    pos, _ = expert.plan(t, expert.Command(start.copy()), DT, 30); ex.append(pos)
ex = np.array(ex); acc = np.diff(ex, 2, axis=1) / DT**2
print("expert rms accel %.2f, p95 %.2f, max %.2f" % (np.sqrt((acc**2).sum(-1).mean()), np.percentile(np.linalg.norm(acc, axis=-1), 95), np.linalg.norm(acc, axis=-1).max()))
print("expert first-waypoint offset (mm): median %.1f" % (1000 * np.median(np.linalg.norm(ex[:, 0] - prop[:, :3].numpy(), axis=-1))))
