"""Worker that runs the OFFICIAL X-VLA implementation for the side-by-side benchmarks.

Run by the interpreter in ``XVLA_OFFICIAL_PYTHON`` (transformers 4.51.3, timm 1.0.12), never by the
project's, as ``python -m benchmarks.official_runner`` in a working directory that holds only this package
(:func:`benchmarks.harness.worker_directory`; ``PYTHONPATH`` cleared); of the project it imports only
:mod:`benchmarks.official`. The official ``models/`` package is loaded at run time from ``--official-src``
(a checkout of official commit 6bc2513) and is not part of this repository. The model is loaded the way the
official ``deploy.py`` loads it (``XVLA.from_pretrained(dir, torch_dtype=float32)``) from one of our
checkpoint directories, which are in the official file layout.

Line protocol on stdin/stdout, so that the benchmark process times each call with its own clock:

    -> ready <load s> <missing keys> <libs>    once the model is loaded
    <- encode | step | chunk <steps>           one forward_vlm / one transformer call at t = 1 /
                                               one generate_actions with x1 = the given noise
    -> ok <seconds measured here>
    <- save <path.npy>                         the last chunk's actions
    -> ok 0
    <- quit

Everything else the official code prints goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.official import fixed_noise, import_official  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", type=Path, required=True, help="directory holding the official models/")
    ap.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (official layout)")
    ap.add_argument("--inputs", type=Path, required=True,
                    help=".npz with input_ids, image_input, image_mask, domain_id, proprio, noise")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out, sys.stdout = sys.stdout, sys.stderr  # the official code's prints must not reach the protocol stream

    t0 = time.perf_counter()
    xvla_cls = import_official(args.official_src.resolve())["XVLA"]
    model, info = xvla_cls.from_pretrained(str(args.checkpoint), torch_dtype=torch.float32,
                                           output_loading_info=True)
    model = model.to(torch.float32).eval()
    load_s = time.perf_counter() - t0
    missing = ",".join(info["missing_keys"]) or "-"
    if info["unexpected_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"checkpoint does not match the official model: {info}")

    data = np.load(args.inputs)
    x = {k: torch.from_numpy(data[k]) for k in ("input_ids", "image_input", "image_mask", "domain_id", "proprio")}
    noise = torch.from_numpy(data["noise"])
    enc: dict[str, torch.Tensor] = {}
    actions = torch.zeros(0)

    def encode() -> None:
        enc.update(model.forward_vlm(x["input_ids"], x["image_input"], x["image_mask"]))

    def step() -> None:
        if not enc:
            encode()
        t = torch.ones(noise.shape[0])
        proprio, x_t = model.action_space.preprocess(x["proprio"], noise)
        model.transformer(domain_id=x["domain_id"], action_with_noise=x_t, proprio=proprio, t=t, **enc)

    import timm
    import transformers

    libs = f"torch={torch.__version__},transformers={transformers.__version__},timm={timm.__version__}"
    print(f"ready {load_s:.3f} {missing} {libs}", file=out, flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        t0 = time.perf_counter()
        with torch.no_grad():
            if cmd == "encode":
                encode()
            elif cmd == "step":
                step()
            elif cmd == "chunk":
                with fixed_noise(noise):
                    actions = model.generate_actions(**x, steps=int(rest[0]))
            elif cmd == "save":
                np.save(rest[0], actions.numpy())
            elif cmd == "quit":
                break
            else:
                raise SystemExit(f"unknown command {cmd!r}")
        print(f"ok {time.perf_counter() - t0:.6f}", file=out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
