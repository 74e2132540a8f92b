"""Grounding probe: from each evaluation episode's first observation, which block does the first chunk head to?"""
import sys, numpy as np, torch
from PIL import Image
from xvla.checkpoint import load_checkpoint
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla.constants import NUM_VIEWS
from xvla_edge.sim.evaluate import episode_spec
from xvla_edge.sim.world import Tabletop
from xvla_edge.sim.scene import GRASP_QUAT
from xvla_edge.sim.demonstrations import DOMAIN_ID

def first_obs(seeds, split, side):
    out = []
    for s in seeds:
        scene, start = episode_spec(s, split)
        t = Tabletop(scene); t.update(start, GRASP_QUAT, 1.0)
        ims = np.stack([np.asarray(Image.fromarray(v).resize((side, side), Image.BICUBIC)) for v in t.images()])
        out.append((scene, start, ims))
    return out

def probe(model, tok, proc, obs, steps=10):
    ids = torch.from_numpy(np.stack([tok(o[0].instruction) for o in obs]))
    side = obs[0][2].shape[1]
    images = torch.from_numpy(np.stack([o[2] for o in obs])).permute(0, 1, 4, 2, 3).float()
    mean = torch.tensor(proc.mean).view(1, 1, 3, 1, 1); std = torch.tensor(proc.std).view(1, 1, 3, 1, 1)
    B = len(obs)
    pixels = torch.zeros(B, NUM_VIEWS, 3, side, side); pixels[:, :2] = (images * proc.rescale_factor - mean) / std
    mask = torch.zeros(B, NUM_VIEWS, dtype=torch.bool); mask[:, :2] = True
    from xvla.rotations import quat_to_rot6d
    prop = torch.zeros(B, 20); prop[:, :3] = torch.tensor(np.stack([o[1] for o in obs]), dtype=torch.float32)
    prop[:, 3:9] = torch.tensor(quat_to_rot6d(GRASP_QUAT)); prop[:, 9] = 1.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(B, 30, 20, generator=g)
    with torch.no_grad():
        act = model.generate_actions(ids, pixels, mask, torch.full((B,), DOMAIN_ID), prop, steps=steps, noise=noise).numpy()
    named = nearest = 0
    for (scene, start, _), a in zip(obs, act):
        d = a[-1, :2] - start[:2]
        to = scene.positions - start[:2]
        cos = to @ d / (np.linalg.norm(to, axis=1) * np.linalg.norm(d) + 1e-9)
        pick = int(np.argmax(cos))
        named += pick == scene.target
        nearest += pick == int(np.argmin(np.linalg.norm(to, axis=1)))
    return named / B, nearest / B

if __name__ == "__main__":
    torch.set_num_threads(2)
    ck = sys.argv[1]
    model = load_checkpoint(ck)
    tok = TextTokenizer(ck); proc = ImageProcessor.from_dir(ck)
    for split in ("random", "not-nearest"):
        obs = first_obs(range(200), split, 64)
        print(split, "named %.2f nearest %.2f" % probe(model, tok, proc, obs))

def expert_probe(obs):
    from xvla_edge.sim import expert
    named = 0
    for scene, start, _ in obs:
        t = Tabletop(scene); t.update(start, GRASP_QUAT, 1.0)
        pos, _ = expert.plan(t, expert.Command(start.copy()), 1/30, 30)
        d = pos[-1, :2] - start[:2]; to = scene.positions - start[:2]
        cos = to @ d / (np.linalg.norm(to, axis=1) * np.linalg.norm(d) + 1e-9)
        named += int(np.argmax(cos)) == scene.target
    return named / len(obs)
