"""PEFT LoRA adapters of X-VLA: one adapter directory read, checked and described (torch-free).

The official fine-tunes are made by the official ``peft_train.py`` with PEFT's ``LoraConfig(r=8, lora_alpha=16,
bias="none", target_modules="all-linear", modules_to_save=["transformer.soft_prompt_hub",
"transformer.action_encoder", "transformer.action_decoder"])`` and saved by PEFT's ``save_pretrained``:

- ``adapter_config.json``: ``peft_type`` ``"LORA"``, ``r``, ``lora_alpha``, ``target_modules`` (the shortest
  name ends that select the layers "all-linear" chose, e.g. ``qkv``, ``attn.proj``, ``fn.proj``),
  ``modules_to_save`` and PEFT's other options;
- ``adapter_model.safetensors``: for every adapted linear layer ``M`` (a module path of the official model)
  ``base_model.model.M.lora_A.weight`` [r, in] and ``base_model.model.M.lora_B.weight`` [out, r]; for every
  module of ``modules_to_save`` a full copy of its parameters, ``base_model.model.M.P``.

:func:`read_adapter` reads both files and refuses, by name, what a merge could not reproduce exactly: another
PEFT method, DoRA (``use_dora``), rank-stabilised scaling (``use_rslora``), trained biases (``bias`` other than
``"none"``, ``lora_bias``), per-layer ranks or alphas (``rank_pattern``, ``alpha_pattern``), the other options
that change the computation, target layers that are not linear layers of X-VLA, keys of any other kind, a
rank that differs from ``r``, dtypes other than float32/float16, non-finite values, unreadable or truncated
files. The merge itself (W + lora_alpha / r · B @ A; saved copies replace the base's) is
:func:`xvla.checkpoint.merge_adapter`, which maps the keys as the checkpoint loader does and checks each
against the base.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from xvla.constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MAX_LORA_RANK
from xvla.errors import CheckpointError
from xvla.files import file_entry

PEFT_PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 1 << 20
DTYPES = ("F32", "F16")

# The linear layers of the official X-VLA model, one module path of each kind (every index 0): every nn.Linear
# PEFT's "all-linear" finds in it (checked against PEFT itself by tests/xvla/test_lora.py). The DaViT attention and
# MLP layers, the BART encoder's attention and feed-forward layers, the action transformer's attention, MLP and
# context projections. Not linear layers: the DaViT patch-embedding convolutions, Florence-2's image projection (a
# raw [in, out] matrix), the embeddings and the per-domain action encoder and decoder (one [in, out] matrix per
# domain, stored as an embedding table), which is why those last are trained as full copies (modules_to_save).
LINEAR_EXAMPLES = tuple(
    [f"vlm.vision_tower.blocks.0.0.{b}.fn.{p}" for b in ("spatial_block.window_attn", "channel_block.channel_attn")
     for p in ("qkv", "proj")]
    + [f"vlm.vision_tower.blocks.0.0.{b}_block.ffn.fn.net.fc{i}" for b in ("spatial", "channel") for i in (1, 2)]
    + [f"vlm.language_model.model.encoder.layers.0.{p}" for p in
       ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")]
    + [f"transformer.blocks.0.{p}" for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    + ["transformer.vlm_proj", "transformer.aux_visual_proj"])
# every module path of those layers, any indices (a LeRobot policy's ``model.`` in front)
LINEAR_LAYERS = re.compile(r"(?:model\.)?(?:" + "|".join(re.escape(m).replace(r"\.0", r"\.\d+") for m in LINEAR_EXAMPLES)
                           + ")")

_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<half>[AB])\.weight")
_UNSUPPORTED_KEYS = [  # (pattern in a key, what it is)
    (re.compile(r"\.lora_[AB]\.bias$"), "a LoRA bias (lora_bias)"),
    (re.compile(r"\.lora_embedding_[AB]$"), "LoRA on an embedding table"),
    (re.compile(r"\.lora_magnitude_vector"), "a DoRA magnitude vector (use_dora)"),
]
# adapter_config.json options that change what the adapter computes → the values a plain merge reproduces
_PLAIN = {
    "use_dora": (False, None), "use_rslora": (False, None), "bias": ("none",), "lora_bias": (False, None),
    "fan_in_fan_out": (False, None), "rank_pattern": ({}, None), "alpha_pattern": ({}, None),
    "layers_to_transform": (None, []), "layers_pattern": (None, [], ""), "target_parameters": (None, []),
    "trainable_token_indices": (None, {}, []), "layer_replication": (None, []), "use_qalora": (False, None),
    "megatron_config": (None, {}),
}


@dataclass(frozen=True)
class LoraAdapter:
    """A checked adapter: its options, the LoRA pairs of each adapted layer and the saved full parameters.

    Keys are as PEFT wrote them less ``base_model.model.``: module paths (``pairs``) and parameter keys
    (``saved``) of the model the adapter was trained on (the official layout for the official fine-tunes).
    """

    directory: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]
    base_model: str | None
    files: dict[str, dict[str, Any]]
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)  # module → (A [r, in], B [out, r])
    saved: dict[str, np.ndarray] = field(repr=False)  # parameter key → its trained full value

    @property
    def scale(self) -> float:
        """PEFT's scaling of B @ A: lora_alpha / r."""
        return self.alpha / self.rank

    def record(self) -> dict[str, Any]:
        """What a bundle's manifest records of the adapter (``source.lora``)."""
        return {"name": self.directory.name, "path": str(self.directory.resolve()), "files": self.files,
                "r": self.rank, "lora_alpha": self.alpha, "target_modules": list(self.target_modules),
                "modules_to_save": list(self.modules_to_save), "layers": len(self.pairs),
                "base_model_name_or_path": self.base_model}

    def base_warning(self, base_dir: str | Path) -> str | None:
        """A warning when the adapter names a hub model as its base whose name is not ``base_dir``'s.

        Only a hub id (``owner/name``) is compared, and only by its last part: a local path recorded at
        training time says nothing about this machine. The merge checks every shape; this catches an
        adapter trained on another checkpoint of the same size.
        """
        name = self.base_model
        if not name or not re.fullmatch(r"[\w.-]+/[\w.-]+", name) or Path(name).exists():
            return None
        if name.split("/")[1].lower() == Path(base_dir).resolve().name.lower():
            return None
        return (f"{self.directory / ADAPTER_CONFIG}: base_model_name_or_path is {name!r}, the base checkpoint is "
                f"{Path(base_dir).name!r}: make sure the adapter was trained on this checkpoint")

    def check_record(self, recorded: Any, where: str) -> None:
        """Raise unless the adapter's files are the ones ``recorded`` (a manifest's ``source.lora``) names."""
        files = recorded.get("files") if isinstance(recorded, dict) else None
        if files != self.files:
            raise CheckpointError(f"{self.directory}: adapter files differ from {where} (recorded "
                                  f"{_digests(files)}, found {_digests(self.files)}): this is not the adapter the "
                                  "bundle was exported with")


def read_adapter(directory: str | Path) -> LoraAdapter:
    """The adapter in ``directory``, checked (:class:`CheckpointError` naming the file, key or option at fault)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: LoRA adapter directory not found")
    cfg_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    cfg = _read_config(cfg_path)
    rank, alpha = cfg["r"], float(cfg["lora_alpha"])
    targets = _target_modules(cfg.get("target_modules"), cfg_path)
    to_save = _names(cfg.get("modules_to_save"), cfg_path, "modules_to_save")
    if not weights_path.is_file():
        other = " (adapter_model.bin is a pickle: re-save the adapter with safe_serialization=True)" if (
            directory / "adapter_model.bin").is_file() else ""
        raise CheckpointError(f"{weights_path}: not found{other}")
    tensors = _read_tensors(weights_path)
    pairs, saved = _sort_keys(tensors, weights_path, rank, targets, to_save)
    base = cfg.get("base_model_name_or_path")
    return LoraAdapter(directory=directory, rank=rank, alpha=alpha, target_modules=targets,
                       modules_to_save=to_save, base_model=base if isinstance(base, str) else None,
                       files={name: file_entry(directory / name) for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)},
                       pairs=pairs, saved=saved)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (a PEFT adapter directory holds {ADAPTER_CONFIG} and "
                              f"{ADAPTER_WEIGHTS})")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes; an adapter config is a few kB")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if cfg.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: peft_type is {cfg.get('peft_type')!r}; only LoRA adapters (\"LORA\") merge")
    for key, plain in _PLAIN.items():
        if key in cfg and not any(cfg[key] == value and type(cfg[key]) is type(value) for value in plain):
            raise CheckpointError(f"{path}: {key} = {json.dumps(cfg[key])[:80]} is not supported; expected "
                                  f"{' or '.join(json.dumps(v) for v in plain)} (plain LoRA: W + lora_alpha / r · B @ A)")
    r = cfg.get("r")
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_LORA_RANK:
        raise CheckpointError(f"{path}: r = {json.dumps(r)[:80]}; expected an integer 1 ... {MAX_LORA_RANK}")
    alpha = cfg.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha == 0:
        raise CheckpointError(f"{path}: lora_alpha = {json.dumps(alpha)[:80]}; expected a finite non-zero number")
    return cfg


def _names(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
        raise CheckpointError(f"{path}: {key} = {json.dumps(value)[:80]}; expected a list of module names")
    return tuple(sorted(set(value)))


def _target_modules(value: Any, path: Path) -> tuple[str, ...]:
    """PEFT's ``target_modules`` as saved: names, each the end of a path of X-VLA's linear layers (PEFT saves the
    shortest ends that select exactly the layers "all-linear" chose: ``qkv``, ``fn.proj``, ``attn.proj``, ...)."""
    if isinstance(value, str):
        raise CheckpointError(f"{path}: target_modules = {value[:80]!r}; expected the list of layer names PEFT "
                              "saves (a pattern string is not supported)")
    names = _names(value, path, "target_modules")
    if not names:
        raise CheckpointError(f"{path}: target_modules is empty; expected the layer names the adapter adapts")
    for name in names:
        indexless = re.sub(r"(?<![^.])\d+(?![^.])", "0", name.removeprefix("model."))
        if not any(_is_suffix(indexless, layer) for layer in LINEAR_EXAMPLES):
            leaves = sorted({layer.rsplit(".", 1)[1] for layer in LINEAR_EXAMPLES})
            raise CheckpointError(f"{path}: target_modules names {name!r}, which is not a linear layer of X-VLA; "
                                  f"expected the end of such a layer's path ({', '.join(leaves)}, "
                                  "e.g. attn.proj)")
    return names


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the adapter file as float32, after checking its dtype (before reading it) and its values."""
    try:
        with safe_open(str(path), "numpy") as f:
            dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
            odd = next((key for key, dtype in dtypes.items() if dtype not in DTYPES), None)
            tensors = {} if odd else {key: f.get_tensor(key) for key in dtypes}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file, torn or truncated ({e})") from None
    if odd is not None:
        raise CheckpointError(f"{path}: {odd} has dtype {dtypes[odd]}; expected {' or '.join(DTYPES)}")
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    for key, value in tensors.items():
        if not np.isfinite(value).all():
            raise CheckpointError(f"{path}: {key} holds non-finite values (NaN or Inf)")
    return {key: value.astype(np.float32) for key, value in tensors.items()}


def _sort_keys(tensors: dict[str, np.ndarray], path: Path, rank: int, targets: tuple[str, ...],
               to_save: tuple[str, ...]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """Split the adapter's tensors into LoRA pairs per module and saved parameters; refuse anything else."""
    halves: dict[str, dict[str, np.ndarray]] = {}
    saved: dict[str, np.ndarray] = {}
    for key, value in sorted(tensors.items()):
        for pattern, what in _UNSUPPORTED_KEYS:
            if pattern.search(key):
                raise CheckpointError(f"{path}: {key} is {what}; not supported")
        if not key.startswith(PEFT_PREFIX):
            raise CheckpointError(f"{path}: {key} does not start with {PEFT_PREFIX!r} (not a key PEFT writes)")
        name = key[len(PEFT_PREFIX):]
        lora = _LORA_KEY.fullmatch(name)
        if lora:
            module = lora["module"]
            if not LINEAR_LAYERS.fullmatch(module):
                raise CheckpointError(f"{path}: {key} adapts {module!r}, which is not a linear layer of X-VLA")
            if not any(_is_suffix(t, module) for t in targets):
                raise CheckpointError(f"{path}: {key} adapts {module!r}, which is not among target_modules")
            halves.setdefault(module, {})[lora["half"]] = value
        elif any(name.startswith(m + ".") or f".{m}." in name for m in to_save):
            saved[name] = value
        else:
            raise CheckpointError(f"{path}: {key} is neither a LoRA matrix (lora_A / lora_B .weight) nor a parameter "
                                  f"of modules_to_save ({', '.join(to_save) or 'none'})")
    for m in to_save:
        if not any(k.startswith(m + ".") or f".{m}." in k for k in saved):
            raise CheckpointError(f"{path}: modules_to_save names {m!r} but the file holds none of its parameters")
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"A", "B"}:
            missing = ({"A", "B"} - set(half)).pop()
            raise CheckpointError(f"{path}: {PEFT_PREFIX}{module}.lora_{missing}.weight is missing (its other half "
                                  "is there)")
        a, b = half["A"], half["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise CheckpointError(f"{path}: {module}: lora_A {list(a.shape)} and lora_B {list(b.shape)}; expected "
                                  f"[{rank}, in] and [out, {rank}] (r = {rank} in {ADAPTER_CONFIG})")
        pairs[module] = (a, b)
    if not pairs and not saved:
        raise CheckpointError(f"{path}: no LoRA matrices and no saved modules")
    return pairs, saved


def _is_suffix(name: str, module: str) -> bool:
    """PEFT's matching of a target name: the module path itself, or a path ending in ``.name``."""
    return module == name or module.endswith("." + name)


def _digests(files: Any) -> str:
    if not isinstance(files, dict):
        return "nothing"
    return ", ".join(f"{n} {str(e.get('sha256'))[:12]}…" if isinstance(e, dict) else n for n, e in files.items())
