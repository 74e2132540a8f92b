"""Generate LoRA fixtures with the OFFICIAL X-VLA code and PEFT itself: a tiny base, a random adapter, outputs.

This is our own driver; neither the official implementation nor PEFT is part of this repository. Run it from the
repository root in a throwaway environment with the official pins and PEFT (torch CPU, transformers 4.51.3,
timm 1.0.12, peft 0.17.1 as the official requirements.txt pins it), not in the project venv. It

1. builds the official tiny ee6d ``XVLA`` of ``tests/fixtures/official_tiny`` with seeded random weights and
   saves it with the official ``save_pretrained`` and ``XVLAProcessor.save_pretrained`` (``base/``),
2. reloads it with ``XVLA.from_pretrained`` and wraps it with ``get_peft_model`` and the LoraConfig of the
   official ``peft_train.py`` (r 8, alpha 16, bias "none", "all-linear", the three modules_to_save),
3. overwrites every LoRA A and B matrix (PEFT initialises B to zero: such an adapter changes nothing) and the
   trainable copies of the modules_to_save with seeded random values, saves the adapter with PEFT's
   ``save_pretrained`` (``adapter/``), reloads it the way the official ``deploy.py`` does
   (``PeftModel.from_pretrained`` on a fresh ``from_pretrained`` base) and checks the round trip,
4. runs ``generate_actions`` of the PEFT model on several observations (raw uint8 images and instructions
   through the official processor, fixed noise), then ``merge_and_unload()`` and the same again, and saves the
   merged state dict (``merged.safetensors``) and the base model's outputs too.

Usage::

    HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 /tmp/peft-env/bin/python -m tools.make_lora_fixtures --official-src /tmp/xvla-official \\
        --out tests/fixtures/lora_tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.official import fixed_noise, import_official  # noqa: E402
from tools.make_official_fixtures import (INSTRUCTIONS, IMAGE_SIZE, NUM_ACTIONS, _seed_for,  # noqa: E402
                                          build_image_processor, build_tokenizer, randomize_weights, tiny_xvla_kwargs)

MODE, DIM, SEED = "ee6d", 20, 20261207
# the LoraConfig of the official peft_train.py
LORA = dict(lora_alpha=16, r=8, bias="none", target_modules="all-linear",
            modules_to_save=["transformer.soft_prompt_hub", "transformer.action_encoder", "transformer.action_decoder"])
# name, domain, views present (in order: the official processor pads missing views at the end), steps, text
CASES = [("c0_d3_v3_s10", 3, 3, 10, 0), ("c1_d3_v2_s4", 3, 2, 4, 5), ("c2_d3_v1_s1", 3, 1, 1, 9),
         ("c3_d0_v3_s3", 0, 3, 3, 3), ("c4_d29_v2_s2", 29, 2, 2, 12)]
LORA_B_STD = 0.05  # with A ~ N(0, 1/in) and scale 2, B @ A moves each weight by ~20 % of its own size


def randomize_adapter(peft_model: Any) -> dict[str, str]:
    """Seeded values for every LoRA matrix and every trainable copy of a modules_to_save module."""
    rules: dict[str, str] = {}
    for key, value in sorted(peft_model.named_parameters()):
        g = torch.Generator().manual_seed(_seed_for(str(SEED), "adapter", key))
        if ".lora_A." in key:
            std, rule = value.shape[1] ** -0.5, f"N(0, 1/in = 1/{value.shape[1]})"
        elif ".lora_B." in key:
            std, rule = LORA_B_STD, f"N(0, {LORA_B_STD}^2)"
        elif ".modules_to_save." in key:
            std = float(value.detach().std())
            rule = f"N(0, {std:.3g}^2) (the base tensor's std)"
        else:
            continue
        with torch.no_grad():
            value.copy_(torch.randn(value.shape, generator=g) * std)
        rules[key] = rule
    return rules


def case_images(name: str, views: int) -> np.ndarray:
    """``views`` blocky random 64x64 uint8 images (8x8 blocks of random colours plus a ramp)."""
    rng = np.random.default_rng(_seed_for(str(SEED), name, "images"))
    ramp = (np.arange(IMAGE_SIZE)[:, None, None] * 0.75 + np.arange(IMAGE_SIZE)[None, :, None] * 0.5)
    blocks = rng.integers(0, 200, size=(views, 8, 8, 3)).astype(np.float32)
    big = np.stack([np.kron(b, np.ones((8, 8, 1), np.float32)) for b in blocks]) + ramp
    return np.clip(big, 0, 255).astype(np.uint8)


def make_cases(processor: Any) -> list[dict[str, Any]]:
    from PIL import Image

    out = []
    for name, domain, views, steps, text in CASES:
        images = case_images(name, views)
        inputs = processor(images=[[Image.fromarray(im) for im in images]], language_instruction=[INSTRUCTIONS[text]])
        g = torch.Generator().manual_seed(_seed_for(str(SEED), name, "proprio-noise"))
        out.append(dict(name=name, domain_id=domain, views=views, steps=steps, instruction=INSTRUCTIONS[text],
                        images=images, proprio=torch.randn((1, DIM), generator=g) * 0.5,
                        noise=torch.randn((1, NUM_ACTIONS, DIM), generator=g),
                        input_ids=inputs["input_ids"].long(), image_input=inputs["image_input"].float(),
                        image_mask=inputs["image_mask"].bool()))
    return out


def run(model: Any, case: dict[str, Any]) -> np.ndarray:
    inputs = {k: case[k].clone() for k in ("input_ids", "image_input", "image_mask", "proprio")}
    with fixed_noise(case["noise"]) as calls, torch.no_grad():
        actions = model.generate_actions(**inputs, domain_id=torch.tensor([case["domain_id"]]), steps=case["steps"])
    if len(calls) != 1:
        raise RuntimeError(f"expected one torch.randn call, got {calls}")
    return actions.detach().numpy()


def provenance_markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    v = summary["versions"]
    official = "\n".join(f"| `models/{k}` | `{h}` |" for k, h in summary["official_file_sha256"].items())
    files = "\n".join(f"| `{k}` | `{h}` |" for k, h in summary["file_sha256"].items())
    leaves = sorted({m.rsplit(".", 1)[1] for m in meta["adapted_modules"]})
    by_part = {part: sum(m.startswith(prefix) for m in meta["adapted_modules"])
               for part, prefix in (("DaViT", "vlm.vision_tower."), ("BART encoder", "vlm.language_model."),
                                    ("action transformer", "transformer."))}
    gaps = meta["max_abs_differences"]
    cases = "\n".join(f"| `{c['name']}` | {c['domain_id']} | {c['views']} | {c['steps']} | "
                       f"{gaps[c['name']]['peft_vs_merged']:.2e} | {gaps[c['name']]['peft_vs_base']:.2f} |"
                       for c in meta["cases"])
    return f"""# Provenance of `tests/fixtures/lora_tiny/`

Generated by `tools/make_lora_fixtures.py` (our own driver). It ran the **official X-VLA implementation** and
**PEFT** (neither is part of this repository, nor copied into it) on tiny random weights. Regenerate with the
command below; do not edit the files by hand.

## Sources and environment

- Official X-VLA: `github.com/2toinf/X-VLA` commit **`{summary['official_commit']}`** (through the fork
  `lihaolin2000/X-VLA`, whose history equals the official one up to that commit), `git archive 6bc2513 models`.
  Its `peft_train.py` gives the LoraConfig used here; its `deploy.py` (`--LoRA_path`) the way the adapter is
  loaded for the outputs: `PeftModel.from_pretrained(XVLA.from_pretrained(base), adapter)`, unmerged.
  Official files imported at run time:

| file | sha256 |
|---|---|
{official}

- Python {v['python']}, torch {v['torch']} (CPU), transformers {v['transformers']}, **peft {v['peft']}** (the version
  the official `requirements.txt` pins), safetensors {v['safetensors']}, numpy {v['numpy']}; the torchvision
  placeholder of `benchmarks/official.py` installed: {summary['torchvision_stubbed']}. `HF_HUB_OFFLINE=1`:
  nothing was downloaded from a model hub.
- Commands (repository root; the official tree from `git archive 6bc2513 models deploy.py peft_train.py
  requirements.txt`; a throwaway venv without torchvision, whose CUDA builds do not load next to a CPU torch):

```
python3.11 -m venv /tmp/peft-env
/tmp/peft-env/bin/pip install torch==2.13.0 transformers==4.51.3 timm==1.0.12 tokenizers==0.21.4 peft==0.17.1 \\
    einops==0.8.1 accelerate safetensors numpy fastapi uvicorn json_numpy opencv-python-headless pillow
/tmp/peft-env/bin/pip uninstall -y torchvision
HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 {summary['command']}   # the hash seed fixes the order of target_modules
```

## What it made

- `base/`: the official tiny ee6d X-VLA of `tests/fixtures/official_tiny` (hidden 48, depth 2, DaViT
  8/16/32/64, BART d_model 32 × 2 layers), every tensor seeded (`tools.make_official_fixtures.randomize_weights`,
  seed {SEED}), saved by the official `save_pretrained` and `XVLAProcessor.save_pretrained`.
- `adapter/`: `get_peft_model(XVLA.from_pretrained(base), LoraConfig(...))` with the official
  `{', '.join(f'{k}={v!r}' for k, v in LORA.items() if k != 'modules_to_save')}` and
  `modules_to_save={LORA['modules_to_save']!r}`; every LoRA A matrix N(0, 1/in), every B matrix N(0, {LORA_B_STD}²) (PEFT initialises B to zero, which would
  change nothing), every trainable copy of the modules_to_save N(0, σ²) with the base tensor's σ; saved by
  PEFT's `save_pretrained` (`adapter_config.json`, `adapter_model.safetensors`; PEFT's model-card template
  `README.md` deleted). Reloaded as `deploy.py` does, every tensor equal.
- What "all-linear" selected (PEFT's own LoRA layers, `cases.json["adapted_modules"]`):
  {len(meta['adapted_modules'])} layers ({', '.join(f'{n} {p}' for p, n in by_part.items())}), of classes
  {', '.join(f'`{k}`' for k in meta['lora_layer_classes'])}; their last names:
  {', '.join(f'`{n}`' for n in leaves)}. Not adapted: the DaViT patch-embedding convolutions `convs.N.proj`,
  the image projection (a raw parameter), embeddings, LayerNorms, the per-domain action encoder / decoder.
  `adapter_config.json` saves `target_modules` as the shortest name ends that select exactly those layers:
  {', '.join(f'`{n}`' for n in sorted(meta['saved_target_modules']))} (`attn.proj` and `fn.proj`, not `proj`,
  which would also select the convolutions).
- Adapter keys as PEFT wrote them: `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight`
  [out, r] per adapted layer; `base_model.model.<module>.<parameter>` for the saved copies (PEFT drops
  `modules_to_save.default.` when saving); `base_model_name_or_path` is the path the base was loaded from.
- `merged.safetensors`: the state dict of `merge_and_unload()` (official key names).
- `cases.npz` / `cases.json`: per case `<case>/images` (uint8 [V, 64, 64, 3]), the instruction, `proprio`
  [1, 20], `noise` [1, 30, 20], the official processor's `input_ids` / `image_input` / `image_mask`, and
  `generate_actions` (noise fixed) of the base model (`base_actions`), the PEFT model (`peft_actions`) and the
  merged model (`merged_actions`):

| case | domain | views | steps | max abs PEFT − merged | max abs PEFT − base |
|---|---|---|---|---|---|
{cases}

## Files

| file | sha256 |
|---|---|
{files}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-src", required=True, type=Path, help="directory holding the official models/ package")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--official-commit", default="6bc2513f5f1cbec715cc668b414392a6cae5c671")
    args = ap.parse_args(argv)
    command = " ".join([Path(sys.executable).name, "-m", __spec__.name, *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    off = import_official(args.official_src.resolve())
    XVLA, XVLAConfig, XVLAProcessor = off["XVLA"], off["XVLAConfig"], off["XVLAProcessor"]
    import peft
    import safetensors
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import save_file

    if args.out.exists():
        shutil.rmtree(args.out)
    base_dir, adapter_dir = args.out / "base", args.out / "adapter"
    base_dir.mkdir(parents=True)

    # 1. the base: the official tiny ee6d model, seeded weights, the official files
    torch.manual_seed(SEED)
    model = XVLA(XVLAConfig(**tiny_xvla_kwargs(MODE)))
    randomize_weights(model, MODE, SEED)
    model.save_pretrained(str(base_dir), safe_serialization=True)
    tok_tmp = args.out / "_tok_tmp"
    processor = XVLAProcessor(image_processor=build_image_processor(), tokenizer=build_tokenizer(tok_tmp))
    shutil.rmtree(tok_tmp)
    processor.save_pretrained(str(base_dir))
    processor = XVLAProcessor.from_pretrained(str(base_dir))

    # 2.-3. the adapter: the official LoraConfig, random matrices and copies, PEFT's files
    peft_model = get_peft_model(XVLA.from_pretrained(str(base_dir)), LoraConfig(**LORA))
    adapted = sorted(n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                     if isinstance(m, LoraLayer))
    kinds = sorted({type(m).__module__ + "." + type(m).__name__ for _, m in peft_model.named_modules()
                    if isinstance(m, LoraLayer)})
    rules = randomize_adapter(peft_model)
    trained = {k: v.detach().clone() for k, v in peft_model.state_dict().items()}
    peft_model.save_pretrained(str(adapter_dir))
    (adapter_dir / "README.md").unlink(missing_ok=True)  # PEFT's model-card template: not read by anyone

    reloaded = PeftModel.from_pretrained(XVLA.from_pretrained(str(base_dir), torch_dtype=torch.float32),
                                         str(adapter_dir), torch_dtype=torch.float32).eval()
    again = reloaded.state_dict()
    differ = [k for k in trained if not torch.equal(trained[k], again[k])]
    if set(again) != set(trained) or differ:
        raise RuntimeError(f"adapter round trip changed {differ or set(again) ^ set(trained)}")

    # 4. outputs: base, PEFT model (unmerged, as deploy.py serves it), merge_and_unload()
    base_model = XVLA.from_pretrained(str(base_dir)).eval()
    cases = make_cases(processor)
    arrays: dict[str, np.ndarray] = {}
    for case in cases:
        pre = case["name"]
        arrays[f"{pre}/images"] = case["images"]
        for key in ("proprio", "noise", "input_ids", "image_input", "image_mask"):
            arrays[f"{pre}/{key}"] = case[key].numpy()
        arrays[f"{pre}/base_actions"] = run(base_model, case)
        arrays[f"{pre}/peft_actions"] = run(reloaded, case)
    merged = reloaded.merge_and_unload().eval()
    for case in cases:
        arrays[f"{case['name']}/merged_actions"] = run(merged, case)
    save_file({k: v.detach().clone().contiguous() for k, v in merged.state_dict().items()},
              str(args.out / "merged.safetensors"), metadata={"format": "pt"})
    np.savez_compressed(args.out / "cases.npz", **arrays)

    gaps = {c["name"]: {"peft_vs_merged": float(np.abs(arrays[f"{c['name']}/peft_actions"]
                                                       - arrays[f"{c['name']}/merged_actions"]).max()),
                        "peft_vs_base": float(np.abs(arrays[f"{c['name']}/peft_actions"]
                                                     - arrays[f"{c['name']}/base_actions"]).max())}
            for c in cases}
    saved_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        adapter_keys = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    meta = {
        "cases": [{k: c[k] for k in ("name", "domain_id", "views", "steps", "instruction")} for c in cases],
        "lora_config": LORA, "adapted_modules": adapted, "lora_layer_classes": kinds,
        "saved_target_modules": saved_cfg.get("target_modules"), "adapter_keys": adapter_keys,
        "max_abs_differences": gaps, "randomisation_rules": rules,
    }
    (args.out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__}
    official = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted((args.official_src / "models").glob("*.py"))}
    files = {str(p.relative_to(args.out)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(args.out.rglob("*")) if p.is_file()}
    summary = {"official_commit": args.official_commit, "official_file_sha256": official, "versions": versions,
               "torchvision_stubbed": off["torchvision_stubbed"], "command": command, "file_sha256": files}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "PROVENANCE.md").write_text(provenance_markdown(summary, meta))
    print(json.dumps({"adapted_modules": len(adapted), "classes": kinds, "gaps": gaps, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
