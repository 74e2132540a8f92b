"""X-VLA configuration: read official and LeRobot ``config.json`` files into one validated dataclass.

The official checkpoint stores ``XVLAConfig`` fields at the top level with a nested ``florence_config``
written with the field names of the vendored Florence-2 code (``dim_embed``, ``image_pos_embed`` ...).
LeRobot checkpoints carry ``"type": "xvla"`` and their own field names (``chunk_size`` for num_actions,
``tokenizer_max_length`` for the instruction length, ``max_state_dim`` for the proprio width — 32 by
default, wider than the action: the network's proprio input takes that many values and the robot's state is
zero-padded to it — the real action width of ``auto`` mode in ``output_features.action.shape``). Both are
normalised here; nothing else in the project reads a raw config dict.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xvla.constants import CONFIG_FILE, GRIPPER_CHANNELS, NUM_VIEWS
from xvla.errors import ConfigError

ACTION_MODES = ("ee6d", "joint", "agibot_ee6d", "auto")
FIXED_ACTION_DIMS = {"ee6d": 20, "joint": 14, "agibot_ee6d": 20}
LEROBOT_MAX_STATE_DIM = 32  # LeRobot's default max_state_dim


@dataclass(frozen=True)
class VisionConfig:
    """DaViT vision tower and image projector (Florence-2 vision side)."""

    embed_dim: tuple[int, ...] = (256, 512, 1024, 2048)
    depths: tuple[int, ...] = (1, 1, 9, 1)
    num_heads: tuple[int, ...] = (8, 16, 32, 64)
    num_groups: tuple[int, ...] = (8, 16, 32, 64)
    window_size: int = 12
    patch_size: tuple[int, ...] = (7, 3, 3, 3)
    patch_stride: tuple[int, ...] = (4, 2, 2, 2)
    patch_padding: tuple[int, ...] = (3, 1, 1, 1)
    patch_prenorm: tuple[bool, ...] = (False, True, True, True)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    max_pos_embeddings: int = 50
    max_temporal_embeddings: int = 100
    image_feature_source: tuple[str, ...] = ("spatial_avg_pool", "temporal_avg_pool")

    @property
    def stride(self) -> int:
        """Total downsampling of the four stages (32 for Florence-2)."""
        total = 1
        for s in self.patch_stride:
            total *= s
        return total


@dataclass(frozen=True)
class TextConfig:
    """BART encoder (Florence-2 language side; the decoder is never used)."""

    vocab_size: int = 51289
    d_model: int = 1024
    encoder_layers: int = 12
    encoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    max_position_embeddings: int = 4096
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    # Every other BART field of the source config (decoder sizes, dropouts ...), kept so a config
    # written back out is complete.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class XVLAConfig:
    """The whole model: Florence-2 encoder side plus the soft-prompted action transformer."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection_dim: int = 1024
    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_domains: int = 30
    len_soft_prompts: int = 32
    dim_time: int = 32
    max_len_seq: int = 512
    use_hetero_proj: bool = False
    num_actions: int = 30
    action_mode: str = "ee6d"
    max_action_dim: int = 20
    real_action_dim: int = 20
    text_tokens: int = 50  # instruction length after padding/truncation (official processor: 50)
    # Width of the proprio input; None: the action width, as in the official model. LeRobot sizes it by
    # ``max_state_dim`` (32 by default) and zero-pads the robot's state to it.
    proprio_width: int | None = None
    # Width of the robot's state (LeRobot's ``observation.state``) when narrower than the proprio input: the
    # state is zero-padded to ``dim_proprio``. None: the robot hands over ``dim_proprio`` values.
    state_width: int | None = None
    # View slots the network sees (official: always 3, absent views as zero features; LeRobot: its
    # ``num_image_views``, the cameras it was configured with plus ``empty_cameras``).
    view_slots: int = NUM_VIEWS

    def __post_init__(self) -> None:
        self.validate()

    @property
    def dim_action(self) -> int:
        """Width of one action as the network sees it."""
        if self.action_mode == "auto":
            return self.max_action_dim
        return FIXED_ACTION_DIMS[self.action_mode]

    @property
    def dim_proprio(self) -> int:
        """Width of proprio as the network sees it (the action width unless the checkpoint says otherwise)."""
        return self.dim_action if self.proprio_width is None else self.proprio_width

    def validate(self) -> None:
        """Reject inconsistent configs with a message naming the field."""
        v, t = self.vision, self.text
        if self.action_mode not in ACTION_MODES:
            raise ConfigError(f"action_mode {self.action_mode!r} is unknown; expected one of {list(ACTION_MODES)}")
        if self.action_mode == "auto" and not 0 < self.real_action_dim <= self.max_action_dim:
            raise ConfigError(
                f"real_action_dim ({self.real_action_dim}) must be in 1..max_action_dim ({self.max_action_dim})"
            )
        if self.state_width is not None and not 0 < self.state_width < self.dim_proprio:
            raise ConfigError(f"state width {self.state_width} (LeRobot input_features observation.state): expected 1 "
                              f"... {self.dim_proprio - 1} (narrower than the proprio input, {self.dim_proprio}; "
                              "a wider state would be cut, which this project refuses)")
        if not 1 <= self.view_slots <= NUM_VIEWS:
            raise ConfigError(f"view slots (LeRobot num_image_views) {self.view_slots}: expected 1 ... {NUM_VIEWS}")
        grippers = GRIPPER_CHANNELS[self.action_mode]
        if self.proprio_width is not None and not (max(grippers, default=-1) < self.proprio_width <= 1024):
            raise ConfigError(
                f"proprio width (LeRobot max_state_dim) {self.proprio_width}: expected {max(grippers, default=0) + 1}"
                f" ... 1024 for action_mode {self.action_mode!r} (its gripper channels {list(grippers)} are zeroed "
                "in proprio)"
            )
        n = len(v.embed_dim)
        for name in ("depths", "num_heads", "num_groups", "patch_size", "patch_stride", "patch_padding",
                     "patch_prenorm"):
            if len(getattr(v, name)) != n:
                raise ConfigError(
                    f"florence_config.vision_config.{name} has {len(getattr(v, name))} entries; "
                    f"expected {n} (one per stage, like dim_embed)"
                )
        for i, (d, h, g) in enumerate(zip(v.embed_dim, v.num_heads, v.num_groups)):
            if d % h or d % g:
                raise ConfigError(
                    f"florence_config.vision_config stage {i}: dim_embed {d} must be divisible by "
                    f"num_heads {h} and num_groups {g}"
                )
        if tuple(v.image_feature_source) != ("spatial_avg_pool", "temporal_avg_pool"):
            raise ConfigError(
                f"florence_config.vision_config.image_feature_source {list(v.image_feature_source)} is not "
                "supported; expected ['spatial_avg_pool', 'temporal_avg_pool'] (the X-VLA release)"
            )
        if self.projection_dim != t.d_model:
            raise ConfigError(
                f"florence_config.projection_dim ({self.projection_dim}) must equal text_config.d_model "
                f"({t.d_model}): image tokens are concatenated with token embeddings"
            )
        if t.d_model % t.encoder_attention_heads:
            raise ConfigError(
                f"text_config.d_model ({t.d_model}) must be divisible by encoder_attention_heads "
                f"({t.encoder_attention_heads})"
            )
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        for name in ("depth", "num_domains", "len_soft_prompts", "dim_time", "max_len_seq", "num_actions",
                     "text_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.use_hetero_proj:
            raise ConfigError("use_hetero_proj=true is not supported (no released X-VLA checkpoint uses it)")

    def tokens_per_view(self, image_size: int) -> int:
        """Image tokens one view contributes at a square ``image_size``: the pooled token plus the grid."""
        grid = image_size // self.vision.stride
        return 1 + grid * grid

    def to_official_dict(self) -> dict[str, Any]:
        """The config.json an official X-VLA checkpoint carries for this configuration."""
        if self.proprio_width is not None or self.state_width is not None or self.view_slots != NUM_VIEWS:
            raise ConfigError(f"the official config.json has no proprio or state width and no view-slot count of its "
                              f"own (action width {self.dim_action}, {NUM_VIEWS} slots); this configuration has "
                              f"{self.dim_proprio}, {self.state_width}, {self.view_slots}: a LeRobot config")
        v, t = self.vision, self.text
        text = dict(t.extra)
        text.update(
            vocab_size=t.vocab_size, d_model=t.d_model, encoder_layers=t.encoder_layers,
            encoder_attention_heads=t.encoder_attention_heads, encoder_ffn_dim=t.encoder_ffn_dim,
            max_position_embeddings=t.max_position_embeddings, activation_function=t.activation_function,
            scale_embedding=t.scale_embedding, pad_token_id=t.pad_token_id, bos_token_id=t.bos_token_id,
            eos_token_id=t.eos_token_id,
        )
        text.setdefault("model_type", "bart")
        vision = {
            "model_type": "davit", "dim_embed": list(v.embed_dim), "depths": list(v.depths),
            "num_heads": list(v.num_heads), "num_groups": list(v.num_groups), "window_size": v.window_size,
            "patch_size": list(v.patch_size), "patch_stride": list(v.patch_stride),
            "patch_padding": list(v.patch_padding), "patch_prenorm": list(v.patch_prenorm),
            "drop_path_rate": 0.1, "enable_checkpoint": False, "projection_dim": self.projection_dim,
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": v.max_pos_embeddings},
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": v.max_temporal_embeddings},
            "image_feature_source": list(v.image_feature_source),
        }
        return {
            "architectures": ["XVLA"], "model_type": "xvla",
            "hidden_size": self.hidden_size, "depth": self.depth, "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio, "num_domains": self.num_domains,
            "len_soft_prompts": self.len_soft_prompts, "soft_prompt_length": self.len_soft_prompts,
            "dim_time": self.dim_time, "max_len_seq": self.max_len_seq, "use_hetero_proj": self.use_hetero_proj,
            "num_actions": self.num_actions, "action_mode": self.action_mode, "use_proprio": True,
            "max_action_dim": self.max_action_dim, "real_action_dim": self.real_action_dim,
            "tokenizer_max_length": self.text_tokens,
            "florence_config": {
                "model_type": "florence2", "projection_dim": self.projection_dim,
                "vocab_size": t.vocab_size, "vision_config": vision, "text_config": text,
            },
        }


def _get(d: dict[str, Any], key: str, where: str, default: Any = dataclasses.MISSING) -> Any:
    if key in d and d[key] is not None:
        return d[key]
    if default is dataclasses.MISSING:
        raise ConfigError(f"{where} is missing required field {key!r}")
    return default


def _vision_from_dict(d: dict[str, Any], where: str) -> VisionConfig:
    """Vision config from either the vendored names (dim_embed ...) or transformers' native ones."""
    dflt = VisionConfig()
    embed = d.get("dim_embed", d.get("embed_dim"))
    if embed is None:
        raise ConfigError(f"{where} is missing required field 'dim_embed' (or 'embed_dim')")
    pos = d.get("image_pos_embed") or {}
    temporal = d.get("visual_temporal_embedding") or {}
    return VisionConfig(
        embed_dim=tuple(int(x) for x in embed),
        depths=tuple(int(x) for x in _get(d, "depths", where)),
        num_heads=tuple(int(x) for x in _get(d, "num_heads", where)),
        num_groups=tuple(int(x) for x in _get(d, "num_groups", where)),
        window_size=int(_get(d, "window_size", where, dflt.window_size)),
        patch_size=tuple(int(x) for x in _get(d, "patch_size", where, dflt.patch_size)),
        patch_stride=tuple(int(x) for x in _get(d, "patch_stride", where, dflt.patch_stride)),
        patch_padding=tuple(int(x) for x in _get(d, "patch_padding", where, dflt.patch_padding)),
        patch_prenorm=tuple(bool(x) for x in _get(d, "patch_prenorm", where, dflt.patch_prenorm)),
        mlp_ratio=float(d.get("mlp_ratio", dflt.mlp_ratio)),
        qkv_bias=bool(d.get("qkv_bias", dflt.qkv_bias)),
        max_pos_embeddings=int(pos.get("max_pos_embeddings", d.get("max_position_embeddings",
                                                                    dflt.max_pos_embeddings))),
        max_temporal_embeddings=int(temporal.get("max_temporal_embeddings",
                                                 d.get("max_temporal_embeddings", dflt.max_temporal_embeddings))),
        image_feature_source=tuple(d.get("image_feature_source", dflt.image_feature_source)),
    )


_TEXT_FIELDS = ("vocab_size", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                "max_position_embeddings", "activation_function", "scale_embedding", "pad_token_id",
                "bos_token_id", "eos_token_id")


def _text_from_dict(d: dict[str, Any], where: str) -> TextConfig:
    dflt = TextConfig()
    values = {k: _get(d, k, where, getattr(dflt, k)) for k in _TEXT_FIELDS}
    for k in ("vocab_size", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim"):
        if k not in d:
            raise ConfigError(f"{where} is missing required field {k!r}")
    extra = {k: val for k, val in d.items() if k not in _TEXT_FIELDS}
    return TextConfig(**values, extra=extra)


def _florence_from_dict(fc: Any, where: str) -> tuple[VisionConfig, TextConfig, int]:
    if not isinstance(fc, dict):
        raise ConfigError(f"{where} must be an object with vision_config and text_config, got {type(fc).__name__}")
    vc = fc.get("vision_config")
    tc = fc.get("text_config")
    if not isinstance(vc, dict):
        raise ConfigError(f"{where}.vision_config is missing (every X-VLA checkpoint carries the full Florence-2 config)")
    if not isinstance(tc, dict):
        raise ConfigError(f"{where}.text_config is missing (every X-VLA checkpoint carries the full Florence-2 config)")
    vision = _vision_from_dict(vc, f"{where}.vision_config")
    text = _text_from_dict(tc, f"{where}.text_config")
    projection_dim = int(fc.get("projection_dim") or vc.get("projection_dim") or 0)
    if not projection_dim:
        raise ConfigError(f"{where} is missing required field 'projection_dim'")
    return vision, text, projection_dim


def config_from_dict(d: dict[str, Any], source: str = "config.json") -> XVLAConfig:
    """Build an :class:`XVLAConfig` from an official or a LeRobot ``config.json`` dict."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
    lerobot = d.get("type") == "xvla"
    if not lerobot and d.get("model_type") not in (None, "xvla"):
        raise ConfigError(f"{source}: model_type is {d.get('model_type')!r}; expected 'xvla'")
    vision, text, projection_dim = _florence_from_dict(d.get("florence_config"), f"{source}: florence_config")
    dflt = XVLAConfig.__dataclass_fields__
    def val(key: str, *aliases: str) -> Any:
        for k in (key, *aliases):
            if k in d and d[k] is not None:
                return d[k]
        return dflt[key].default
    num_actions = int(val("num_actions", "chunk_size") if not lerobot else d.get("chunk_size", val("num_actions")))
    action_mode = str(val("action_mode")).lower()
    kwargs = dict(
        vision=vision, text=text, projection_dim=projection_dim,
        hidden_size=int(val("hidden_size")), depth=int(val("depth")), num_heads=int(val("num_heads")),
        mlp_ratio=float(val("mlp_ratio")), num_domains=int(val("num_domains")),
        len_soft_prompts=int(val("len_soft_prompts", "soft_prompt_length")), dim_time=int(val("dim_time")),
        max_len_seq=int(val("max_len_seq")), use_hetero_proj=bool(val("use_hetero_proj")),
        num_actions=num_actions, action_mode=action_mode,
        max_action_dim=int(val("max_action_dim")), real_action_dim=int(val("real_action_dim")),
        text_tokens=int(d.get("tokenizer_max_length", dflt["text_tokens"].default)),
    )
    try:
        cfg = XVLAConfig(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if lerobot:
        if action_mode == "auto":
            real = (d.get("output_features") or {}).get("action", {}).get("shape", [cfg.max_action_dim])[-1]
            cfg = dataclasses.replace(cfg, real_action_dim=int(real))
        if d.get("use_proprio") is False:
            raise ConfigError(f"{source}: use_proprio is false; only X-VLA with proprio is supported")
        state_dim = d.get("max_state_dim", LEROBOT_MAX_STATE_DIM)
        if isinstance(state_dim, bool) or not isinstance(state_dim, int):
            raise ConfigError(f"{source}: max_state_dim must be an integer, got {state_dim!r}")
        state = ((d.get("input_features") or {}).get("observation.state") or {}).get("shape")
        if state is not None and not (isinstance(state, list) and state and isinstance(state[-1], int)
                                      and not isinstance(state[-1], bool)):
            raise ConfigError(f"{source}: input_features.observation.state.shape = {state!r}: expected a list of "
                              "integers")
        proprio = None if state_dim == cfg.dim_action else state_dim
        narrower = state[-1] if state is not None and state[-1] != state_dim else None
        slots = d.get("num_image_views")
        if slots is None:  # LeRobot counts its camera features (and empty cameras)
            features = d.get("input_features") or {}
            slots = sum(isinstance(f, dict) and f.get("type") == "VISUAL" for f in features.values()) or NUM_VIEWS
        if isinstance(slots, bool) or not isinstance(slots, int):
            raise ConfigError(f"{source}: num_image_views must be an integer, got {slots!r}")
        try:
            cfg = dataclasses.replace(cfg, proprio_width=proprio, state_width=narrower, view_slots=slots)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(path: str | Path) -> XVLAConfig:
    """Read and validate ``config.json`` (a file path or a checkpoint directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (a checkpoint directory holds config.json)")
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return config_from_dict(d, str(path))
