"""Can the sim-size model learn a chunk that depends only on the colour word?"""
import sys; sys.path.insert(0, "/tmp/proto")
import numpy as np, torch, tempfile
from xvla.sizes import size_config
from xvla.model import XVLA
from xvla.objective import flow_matching_loss
from xvla.random_checkpoint import write_tokenizer
from xvla.preprocessing import TextTokenizer
from xvla_edge.sim import train as T
torch.set_num_threads(2); torch.manual_seed(0)
cfg, side = size_config("sim")
from pathlib import Path; d = Path(tempfile.mkdtemp()); write_tokenizer(d, cfg.text.vocab_size, T.corpus()); tok = TextTokenizer(d)
colours = ["red", "green", "blue"]
ids = torch.from_numpy(np.stack([tok(f"pick up the {c} block") for c in colours]))
targets = torch.tensor([[0.3, -0.1, 0.05], [0.4, 0.0, 0.05], [0.5, 0.1, 0.05]])
m = XVLA(cfg); T.init_weights(m, 0); m.train()
opt = torch.optim.AdamW(m.parameters(), lr=1.5e-3, weight_decay=0.01)
B = 32
for step in range(1, 301):
    k = torch.randint(3, (B,))
    px = torch.randn(B, 3, 3, side, side) * 0.5; mask = torch.zeros(B, 3, dtype=torch.bool); mask[:, :2] = True
    act = torch.zeros(B, 30, 20); act[:, :, :3] = targets[k][:, None]; act[:, :, 9] = 1
    prop = torch.zeros(B, 20); prop[:, :3] = 0.4
    terms = flow_matching_loss(m, ids[k], px, mask, torch.full((B,), 3), prop, act)
    opt.zero_grad(); terms["loss"].backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    if step % 50 == 0: print(step, {a: round(float(b), 4) for a, b in terms.items()}, flush=True)
m.eval()
px = torch.randn(3, 3, 3, side, side) * 0.5; mask = torch.zeros(3, 3, dtype=torch.bool); mask[:, :2] = True
prop = torch.zeros(3, 20); prop[:, :3] = 0.4
out = m.generate_actions(ids, px, mask, torch.full((3,), 3), prop, steps=10)
print(out[:, -1, :3])
