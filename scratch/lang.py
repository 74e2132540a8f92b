import sys; sys.path.insert(0, "/tmp/proto")
import numpy as np, torch
from probe import *
from xvla.rotations import quat_to_rot6d
from xvla_edge.sim.scene import random_scene
from xvla_edge.sim.demonstrations import start_pose
ck = sys.argv[1]; base = int(sys.argv[2])
model = load_checkpoint(ck); tok = TextTokenizer(ck, model.config.text_tokens); proc = ImageProcessor.from_dir(ck)
mean = torch.tensor(proc.mean).view(1, 1, 3, 1, 1); std = torch.tensor(proc.std).view(1, 1, 3, 1, 1)
hits = 0; n = 0; spread = []; per = {}
for s in range(base, base + 40):
    rng = np.random.default_rng(s); scene = random_scene(rng); start = start_pose(rng)
    t = Tabletop(scene); t.update(start, GRASP_QUAT, 1.0)
    ims = np.stack([np.asarray(Image.fromarray(v).resize((64, 64), Image.BICUBIC)) for v in t.images()])
    px = torch.zeros(3, 3, 3, 64, 64); px[:, :2] = (torch.from_numpy(ims).permute(0, 3, 1, 2).float()[None] * proc.rescale_factor - mean) / std
    mask = torch.zeros(3, 3, dtype=torch.bool); mask[:, :2] = True
    ids = torch.from_numpy(np.stack([tok(scene.with_target(k).instruction) for k in range(3)]))
    prop = torch.zeros(3, 20); prop[:, :3] = torch.tensor(start, dtype=torch.float32); prop[:, 3:9] = torch.tensor(quat_to_rot6d(GRASP_QUAT)); prop[:, 9] = 1
    noise = torch.randn(1, 30, 20).repeat(3, 1, 1)
    a = model.generate_actions(ids, px, mask, torch.full((3,), 3), prop, steps=10, noise=noise).numpy()[:, -1, :2]
    spread.append(np.linalg.norm(a - a.mean(0), axis=1).mean())
    for k in range(3):
        ok = int(np.argmin(np.linalg.norm(scene.positions - a[k], axis=1))) == k; hits += ok; n += 1
        c = scene.colours[k]; per.setdefault(c, []).append(ok)
print("end-point nearest block == named: %.2f; spread across instructions %.1f mm" % (hits / n, 1000 * np.mean(spread)))
print({c: round(float(np.mean(v)), 2) for c, v in per.items()})
