"""Observation preprocessing exactly as an X-VLA checkpoint defines it: tokenizer and image processor.

numpy + Pillow + tokenizers only (no torch, no transformers), so the on-robot runtime imports this
module as is.

- Text: the checkpoint's BART byte-level BPE tokenizer (``tokenizer.json``, or ``vocab.json`` +
  ``merges.txt``) with ``<s> ... </s>``, truncated and padded to 50 tokens with the pad id (1).
- Images: ``preprocessor_config.json`` (a CLIP-style image processor config): Pillow resize with its
  resample filter (bicubic by default; aspect ratio not kept), optional centre crop, rescale by 1/255,
  ImageNet mean/std normalisation, channels first. Always 3 view slots; an absent view is a zero image
  with mask False (the model gives it zero features).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from xvla.constants import MAX_IMAGE_SIDE, NUM_VIEWS, PREPROCESSOR_FILE
from xvla.errors import CheckpointError, InputError

MAX_TOKENS = 50
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PIL_FILTERS = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX,
                5: Image.HAMMING}


@dataclass(frozen=True)
class ImageProcessor:
    """Resize / crop / rescale / normalise, read from ``preprocessor_config.json``."""

    height: int = 224
    width: int = 224
    resample: int = 3
    do_resize: bool = True
    do_center_crop: bool = False
    crop_height: int = 224
    crop_width: int = 224
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dir(cls, ckpt_dir: str | Path, image_size: int | None = None) -> ImageProcessor:
        """Read ``preprocessor_config.json``. Without the file, ``image_size`` must say the side: the processor
        is then X-VLA's usual one (bicubic resize to that square, ImageNet normalisation); a guessed side
        would feed the network images of a size it was not trained on. With the file, an ``image_size``
        that contradicts it is refused."""
        path = Path(ckpt_dir) / PREPROCESSOR_FILE
        if not path.is_file():
            if image_size is None:
                raise CheckpointError(
                    f"{path}: missing. It says how camera images are resized and normalised for this "
                    "checkpoint (released X-VLA checkpoints ship it: 224×224, bicubic, ImageNet mean/std); "
                    "give the side explicitly (export --image-size N) to use those defaults at N×N")
            if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= MAX_IMAGE_SIDE:
                raise CheckpointError(f"image size {image_size!r}: expected an integer 1 ... {MAX_IMAGE_SIDE}")
            return cls(height=image_size, width=image_size, crop_height=image_size, crop_width=image_size)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None
        proc = cls.from_dict(d, str(path))
        if image_size is not None and proc.output_size != (image_size, image_size):
            raise CheckpointError(f"{path}: images of {proc.output_size[0]}×{proc.output_size[1]}, but an image size "
                                  f"of {image_size} was given; drop it or fix the file")
        return proc

    @classmethod
    def from_dict(cls, d: dict, source: str = "preprocessor_config.json") -> ImageProcessor:
        size = d.get("size", {"height": 224, "width": 224})
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if "shortest_edge" in size:
            raise CheckpointError(
                f"{source}: size {size} (shortest_edge resize) is not supported; X-VLA resizes to a fixed "
                "{'height': H, 'width': W}"
            )
        if "height" not in size or "width" not in size:
            raise CheckpointError(f"{source}: size must have 'height' and 'width'; got {size}")
        crop = d.get("crop_size") or {"height": size["height"], "width": size["width"]}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        resample = int(d.get("resample", 3))
        if resample not in _PIL_FILTERS:
            raise CheckpointError(f"{source}: resample {resample} is not a known filter; expected one of "
                                  f"{sorted(_PIL_FILTERS)}")
        proc = cls(
            height=int(size["height"]), width=int(size["width"]), resample=resample,
            do_resize=bool(d.get("do_resize", True)), do_center_crop=bool(d.get("do_center_crop", False)),
            crop_height=int(crop["height"]), crop_width=int(crop["width"]),
            do_rescale=bool(d.get("do_rescale", True)), rescale_factor=float(d.get("rescale_factor", 1 / 255)),
            do_normalize=bool(d.get("do_normalize", True)),
            mean=tuple(float(x) for x in d.get("image_mean", IMAGENET_MEAN)),
            std=tuple(float(x) for x in d.get("image_std", IMAGENET_STD)),
        )
        if proc.output_size[0] != proc.output_size[1]:
            raise CheckpointError(f"{source}: the model needs square images; this config gives {proc.output_size}")
        return proc

    def to_dict(self) -> dict:
        """The ``preprocessor_config.json`` describing this processor."""
        return {
            "image_processor_type": "CLIPImageProcessor", "do_resize": self.do_resize,
            "size": {"height": self.height, "width": self.width}, "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_height, "width": self.crop_width},
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "image_mean": list(self.mean), "image_std": list(self.std),
            "do_convert_rgb": None,
        }

    @property
    def output_size(self) -> tuple[int, int]:
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        return self.height, self.width

    def process_one(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """HxWx3 uint8 RGB → 3xSxS float32 (``image`` checked first: :func:`check_image`)."""
        return self._process(check_image(image, name))

    def _process(self, image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(image))
        if self.do_resize and (pil.height, pil.width) != (self.height, self.width):
            pil = pil.resize((self.width, self.height), resample=_PIL_FILTERS[self.resample])
        arr = np.asarray(pil)
        if self.do_center_crop:
            arr = _center_crop(arr, self.crop_height, self.crop_width)
        out = arr.astype(np.float32)
        if self.do_rescale:
            out = out * np.float32(self.rescale_factor)
        if self.do_normalize:
            out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def __call__(self, images: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """Up to 3 views (None = absent) → (pixel_values [3, 3, S, S] float32, image_mask [3] bool), the views
        checked first (:func:`check_views`)."""
        return self.pixels(check_views(images))

    def pixels(self, images: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` of views already checked by :func:`check_views`."""
        h, w = self.output_size
        pixels = np.zeros((NUM_VIEWS, 3, h, w), np.float32)
        mask = np.zeros(NUM_VIEWS, bool)
        for i, img in enumerate(images):
            if img is not None:
                pixels[i] = self._process(img)
                mask[i] = True
        return pixels, mask


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """``image`` when it is an HxWx3 uint8 RGB array of at most :data:`MAX_IMAGE_SIDE` per side, else
    :class:`InputError` naming ``name``."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected a numpy HxWx3 uint8 RGB array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name}: expected shape (H, W, 3) RGB, got {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected dtype uint8 (0..255), got {image.dtype}")
    if max(image.shape[:2]) > MAX_IMAGE_SIDE:
        raise InputError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels; at most {MAX_IMAGE_SIDE} per side "
                         "(downscale it at the camera)")
    return image


def check_views(images: Sequence[Any]) -> list[np.ndarray | None]:
    """1 to 3 views, each None (absent) or an image :func:`check_image` accepts, at least one present."""
    images = list(images)
    if not 1 <= len(images) <= NUM_VIEWS:
        raise InputError(f"images: expected 1 to {NUM_VIEWS} views, got {len(images)}")
    for i, img in enumerate(images):
        if img is not None:
            check_image(img, f"images[{i}]")
    if all(img is None for img in images):
        raise InputError("images: at least one view must be present")
    return images


def _center_crop(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = arr.shape[:2]
    if h > H or w > W:  # pad like the reference processor does before cropping
        padded = np.zeros((max(h, H), max(w, W), arr.shape[2]), arr.dtype)
        top, left = (padded.shape[0] - H) // 2, (padded.shape[1] - W) // 2
        padded[top : top + H, left : left + W] = arr
        arr, H, W = padded, padded.shape[0], padded.shape[1]
    top, left = (H - h) // 2, (W - w) // 2
    return arr[top : top + h, left : left + w]


def tokenizer_dir(ckpt_dir: str | Path) -> Path:
    """Where a checkpoint keeps its tokenizer files: next to config.json, or (LeRobot since August 2026) in its
    ``tokenizer/`` sub-directory; the checkpoint directory itself when neither has them."""
    ckpt_dir = Path(ckpt_dir)
    sub = ckpt_dir / "tokenizer"
    has = lambda d: (d / "tokenizer.json").is_file() or (d / "vocab.json").is_file()  # noqa: E731
    return sub if not has(ckpt_dir) and has(sub) else ckpt_dir


class TextTokenizer:
    """The checkpoint's BART tokenizer, fixed to ``max_length`` tokens (pad, never a mask)."""

    def __init__(self, ckpt_dir: str | Path, max_length: int = MAX_TOKENS) -> None:
        """``max_length``: the checkpoint's ``XVLAConfig.text_tokens`` (50 for every official release)."""
        from tokenizers import Tokenizer
        from tokenizers.processors import RobertaProcessing

        ckpt_dir = tokenizer_dir(ckpt_dir)
        tok_json, vocab, merges = ckpt_dir / "tokenizer.json", ckpt_dir / "vocab.json", ckpt_dir / "merges.txt"
        try:
            if tok_json.is_file():
                tok = Tokenizer.from_file(str(tok_json))
            elif vocab.is_file() and merges.is_file():
                from tokenizers import ByteLevelBPETokenizer

                tok = ByteLevelBPETokenizer(str(vocab), str(merges))._tokenizer
                tok.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
            else:
                raise CheckpointError(
                    f"{ckpt_dir}: no tokenizer found; expected tokenizer.json or vocab.json + merges.txt (a LeRobot "
                    "checkpoint saved before August 2026 only names facebook/bart-large: copy that tokenizer's "
                    "files next to config.json)"
                )
        except CheckpointError:
            raise
        except Exception as e:  # tokenizers raises plain Exception subclasses on corrupt files
            raise CheckpointError(f"{ckpt_dir}: tokenizer files could not be read ({e})") from None
        pad_token = _pad_token(ckpt_dir)
        pad_id = tok.token_to_id(pad_token)
        if pad_id is None:
            raise CheckpointError(f"{ckpt_dir}: pad token {pad_token!r} is not in the tokenizer vocabulary")
        tok.enable_truncation(max_length)
        tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
        self._tok = tok
        self.max_length = max_length
        self.pad_id = pad_id

    def __call__(self, text: str) -> np.ndarray:
        """An instruction → token ids [max_length] int64."""
        if not isinstance(text, str):
            raise InputError(f"instruction: expected a string, got {type(text).__name__}")
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)


def _pad_token(ckpt_dir: Path) -> str:
    cfg = ckpt_dir / "tokenizer_config.json"
    if cfg.is_file():
        try:
            pad = json.loads(cfg.read_text()).get("pad_token", "<pad>")
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
            raise CheckpointError(f"{cfg}: not valid JSON ({e})") from None
        if isinstance(pad, dict):
            pad = pad.get("content", "<pad>")
        return str(pad)
    return "<pad>"
