"""Learnability probe: train only on the first K samples of each demonstration (where the instruction decides)."""
import sys, time, os
sys.path.insert(0, "/tmp/proto")
import numpy as np, torch
from concurrent.futures import ProcessPoolExecutor
from xvla_edge.sim import demonstrations as D, train as T
from xvla.random_checkpoint import write_tokenizer
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla.model import XVLA
from xvla.sizes import size_config
from pathlib import Path
K = int(sys.argv[3]) if len(sys.argv) > 3 else 15

def sorted_episode(s, tgt):
    """Layout s with colours assigned by increasing y (red, green, blue)."""
    from xvla_edge.sim import scene as S
    orig = S.random_scene
    def sorted_scene(rng, n_blocks=3):
        sc = orig(rng, n_blocks)
        order = np.argsort(sc.positions[:, 1])
        return S.Scene(("red", "green", "blue"), sc.positions[order], sc.target, sc.verb, sc.phrase)
    D.random_scene = sorted_scene
    try:
        return D.episode(s, 64, tgt, 2)
    finally:
        D.random_scene = orig

def part_sorted(seeds):
    ims, ins, props, acts = [], [], [], []
    for s in seeds:
        for tgt in range(3):
            scene, i, p, a, ok = sorted_episode(s, tgt)
            ims += i[:K]; props += p[:K]; acts += a[:K]; ins += [scene.instruction] * len(i[:K])
    return np.stack(ims), ins, np.stack(props), np.stack(acts)

def part(seeds):
    ims, ins, props, acts = [], [], [], []
    for s in seeds:
        for tgt in range(3):
            import os
            only = os.environ.get("ONLY")
            rng = np.random.default_rng(s)
            from xvla_edge.sim.scene import random_scene
            if only and random_scene(rng).colours[tgt] != only:
                continue
            scene, i, p, a, ok = D.episode(s, 64, tgt, 2)
            ims += i[:K]; props += p[:K]; acts += a[:K]; ins += [scene.instruction] * len(i[:K])
    return np.stack(ims), ins, np.stack(props), np.stack(acts)

if __name__ == "__main__":
    out = Path(sys.argv[1]); steps = int(sys.argv[2])
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1.5e-3
    B = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    seeds = range(10_000_000, 10_000_600)
    nsorted = int(os.environ.get("SORTED", "0"))
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(part, [seeds[0::2], seeds[1::2]]))
        if nsorted:
            ss = range(20_000_000, 20_000_000 + nsorted)
            parts += list(pool.map(part_sorted, [ss[0::2], ss[1::2]]))
    nsorted_samples = sum(len(p[0]) for p in parts[2:])
    ims = np.concatenate([p[0] for p in parts]); ins = sum([p[1] for p in parts], [])
    names = sorted(set(ins)); instr = np.array([names.index(x) for x in ins])
    data = D.Samples(ims, instr, names, np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]), 0, 0)
    print(len(ims), "samples", flush=True)
    torch.set_num_threads(2)
    cfg, side = size_config("sim")
    import dataclasses
    TT = int(os.environ.get("TEXT_TOKENS", "50"))
    cfg = dataclasses.replace(cfg, text_tokens=TT)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out, cfg.text.vocab_size, T.corpus())
    tok = TextTokenizer(out, TT)
    ids = torch.from_numpy(np.stack([tok(t) for t in names]))
    proc = ImageProcessor(height=side, width=side, crop_height=side, crop_width=side)
    model = XVLA(cfg); T.init_weights(model, 0); model.train()
    import os
    if os.environ.get("POS_STD"):
        s = float(os.environ["POS_STD"])
        with torch.no_grad():
            pe = model.vlm.multi_modal_projector.image_position_embed
            pe.row_embeddings.weight.normal_(0, s); pe.column_embeddings.weight.normal_(0, s)
            model.transformer.pos_emb.normal_(0, float(os.environ.get("TPOS_STD", s)))
    opts = T.TrainOptions(steps=steps, learning_rate=lr, log_every=100, batch_size=B)
    import json
    from xvla.keymap import to_official
    from safetensors.torch import save_file
    cur = int(os.environ.get("CURRICULUM", "0"))
    if cur:
        if nsorted:
            red_idx = torch.arange(len(instr) - nsorted_samples, len(instr))
        else:
            red = torch.from_numpy(np.array([("red" in names[i]) for i in instr]))
            red_idx = torch.nonzero(red).squeeze(1)
        orig = torch.randint
        count = [0]
        def randint(high, size, generator=None):
            count[0] += 1
            if count[0] <= cur:
                return red_idx[orig(len(red_idx), size, generator=generator)]
            return orig(high, size, generator=generator)
        torch.randint = randint
    T._fit(model, data, ids, proc, opts, print)
    model.eval()
    (out / "config.json").write_text(json.dumps(cfg.to_official_dict()))
    save_file(to_official({k: v.contiguous() for k, v in model.state_dict().items()}), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "preprocessor_config.json").write_text(json.dumps(proc.to_dict()))
