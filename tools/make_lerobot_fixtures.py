"""Generate parity fixtures by running LeRobot's own X-VLA policy on tiny random weights.

This is our own driver; LeRobot is NOT part of this repository. Run it from the repository root in a
throwaway environment that has LeRobot installed (``pip install 'lerobot[xvla]==0.4.4'``), not in the project
venv: it imports ``lerobot.policies.xvla`` and this repository's ``tools.make_official_fixtures`` (for the
same tiny Florence-2 configuration and seeded weight initialisation as the official fixtures).

It builds LeRobot's ``XVLAPolicy`` with a tiny configuration the way a LeRobot user configures one for a new
robot — ``max_state_dim`` 32 (LeRobot's default, wider than the 20-wide ee6d action), an 8-value
``observation.state``, one 64×64 camera — overwrites every parameter with seeded random values, saves it with
LeRobot's ``save_pretrained`` (``config.json`` + ``model.safetensors``, exactly as LeRobot writes them),
reloads it with ``from_pretrained`` (checks the round trip), and runs ``predict_action_chunk`` on several
observations with the initial noise fixed, recording the inputs, the state as LeRobot pads it, the noise and
the actions into ``cases.npz`` (and ``cases.json``).

Usage::

    HF_HUB_OFFLINE=1 /tmp/lerobot-env/bin/python -m tools.make_lerobot_fixtures --out tests/fixtures/lerobot_tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.official import fixed_noise  # noqa: E402
from tools.make_official_fixtures import IMAGENET_MEAN, IMAGENET_STD, randomize_weights, tiny_florence_config  # noqa: E402

STATE_DIM = 8
MAX_STATE_DIM = 32
IMAGE = 64
STEPS = 4
TEXT_LEN = 50
CASES = 4
SEED = 20261129
DOMAINS = (0, 3, 7, 29)


def build_policy() -> Any:
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.xvla.configuration_xvla import XVLAConfig
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

    config = XVLAConfig(
        florence_config=tiny_florence_config(), hidden_size=48, depth=2, num_heads=4, mlp_ratio=4.0,
        num_domains=30, len_soft_prompts=32, dim_time=32, max_len_seq=512, use_hetero_proj=False,
        chunk_size=30, n_action_steps=30, action_mode="ee6d", max_state_dim=MAX_STATE_DIM, use_proprio=True,
        num_denoising_steps=STEPS, tokenizer_max_length=TEXT_LEN, dtype="float32",
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
                        "observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE, IMAGE))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(20,))},
        device="cpu",
    )
    policy = XVLAPolicy(config)
    randomize_weights(policy.model, "lerobot-ee6d", SEED)
    return policy.eval()


def observation(rng: np.random.Generator, case: int) -> dict[str, Any]:
    """One observation as LeRobot's preprocessor hands it to the policy (image scaled to 0..1 and normalised
    with ImageNet's mean and std, tokens padded), plus what a robot would have given (the uint8 image)."""
    image = rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    length = int(rng.integers(5, TEXT_LEN))
    ids = np.full(TEXT_LEN, 1, np.int64)  # pad id 1
    ids[:length] = rng.integers(3, 1000, length)
    ids[0], ids[length - 1] = 0, 2  # <s> ... </s>
    return {
        "image_uint8": image,
        "state": rng.normal(0, 0.5, STATE_DIM).astype(np.float32),
        "input_ids": ids,
        "domain_id": DOMAINS[case % len(DOMAINS)],
        "batch": {
            "observation.images.front": ((chw - mean) / std)[None],
            "observation.language.tokens": torch.from_numpy(ids)[None],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import lerobot
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

    torch.manual_seed(SEED)
    policy = build_policy()
    if args.out.exists():
        shutil.rmtree(args.out)
    policy.save_pretrained(args.out)
    reloaded = XVLAPolicy.from_pretrained(args.out).eval()
    for (k, a), (_, b) in zip(sorted(policy.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert torch.equal(a, b), f"{k} changed in LeRobot's save/load round trip"
    rng = np.random.default_rng(SEED)
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("image_uint8", "pixel_values", "state", "proprio",
                                                           "input_ids", "domain_id", "noise", "actions")}
    for case in range(CASES):
        obs = observation(rng, case)
        batch = {**obs["batch"], "observation.state": torch.from_numpy(obs["state"])[None],
                 "domain_id": torch.tensor([obs["domain_id"]])}
        noise = torch.from_numpy(rng.standard_normal((1, 30, 20)).astype(np.float32))
        with fixed_noise(noise) as calls:
            actions = reloaded.predict_action_chunk(batch)
        assert len(calls) == 1, calls
        proprio = reloaded._prepare_state(batch, 1, torch.device("cpu"))  # the state as LeRobot pads it
        for key, value in (("image_uint8", obs["image_uint8"]), ("pixel_values", obs["batch"]["observation.images.front"][0].numpy()),
                           ("state", obs["state"]), ("proprio", proprio[0].numpy()), ("input_ids", obs["input_ids"]),
                           ("domain_id", np.int64(obs["domain_id"])), ("noise", noise[0].numpy()),
                           ("actions", actions[0].numpy())):
            arrays[key].append(np.asarray(value))
    np.savez_compressed(args.out / "cases.npz", **{k: np.stack(v) for k, v in arrays.items()})
    import transformers

    (args.out / "cases.json").write_text(json.dumps({
        "generator": "tools/make_lerobot_fixtures.py", "lerobot": lerobot.__version__,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cases": CASES, "steps": STEPS, "state_dim": STATE_DIM, "max_state_dim": MAX_STATE_DIM,
        "image_size": IMAGE, "text_len": TEXT_LEN, "seed": SEED, "domains": list(DOMAINS),
        "call": "XVLAPolicy.from_pretrained(dir).predict_action_chunk(batch) with torch.randn fixed to `noise`",
    }, indent=2) + "\n")
    print(f"wrote {args.out}: {sorted(p.name for p in args.out.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
