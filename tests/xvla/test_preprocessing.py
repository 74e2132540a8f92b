"""Preprocessing against transformers' own image processor and tokenizer (independent references)."""

from __future__ import annotations

import numpy as np
import pytest

from xvla.errors import InputError
from xvla.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageProcessor, TextTokenizer


@pytest.mark.parametrize("shape", [(120, 160, 3), (64, 64, 3), (33, 257, 3), (480, 640, 3)])
def test_images_match_transformers_clip_processor(shape) -> None:
    pytest.importorskip("transformers")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    ref = CLIPImageProcessorPil(size={"height": 64, "width": 64}, do_center_crop=False, resample=3,
                                image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    expected = ref(images=[img], return_tensors="np")["pixel_values"][0]
    ours = ImageProcessor(height=64, width=64).process_one(img)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_center_crop_config_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = {"size": {"height": 80, "width": 96}, "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
           "resample": 2, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    img = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    expected = CLIPImageProcessorPil(**cfg)(images=[img], return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ImageProcessor.from_dict(cfg).process_one(img), expected, atol=1e-5)


def test_three_slots_with_mask_for_missing_views() -> None:
    proc = ImageProcessor(height=64, width=64)
    img = np.full((10, 20, 3), 255, np.uint8)
    pixels, mask = proc([None, img])
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == np.float32
    assert mask.tolist() == [False, True, False]
    assert not pixels[0].any() and not pixels[2].any()
    np.testing.assert_allclose(pixels[1, 0], (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], rtol=1e-6)


@pytest.mark.parametrize(
    "images, message",
    [
        ([np.zeros((8, 8), np.uint8)], r"images\[0\]: expected shape \(H, W, 3\)"),
        ([np.zeros((8, 8, 4), np.uint8)], r"images\[0\]: expected shape \(H, W, 3\) RGB, got \(8, 8, 4\)"),
        ([np.zeros((8, 8, 3), np.float32)], r"images\[0\]: expected dtype uint8 .* got float32"),
        ([None, None], "at least one view"),
        ([None] * 4, "expected 1 to 3 views, got 4"),
        (["not an image"], r"images\[0\]: expected a numpy"),
    ],
)
def test_bad_images_are_named(images, message) -> None:
    with pytest.raises(InputError, match=message):
        ImageProcessor(height=64, width=64)(images)


def test_tokenizer_matches_transformers(tiny_checkpoint) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    ours = TextTokenizer(tiny_checkpoint)
    for text in ["pick up the red block", "", "fold the cloth " * 40, "Ünïcode ☃ instruction"]:
        expected = ref(text, padding="max_length", max_length=50, truncation=True)["input_ids"]
        got = ours(text)
        assert got.dtype == np.int64 and got.tolist() == expected
    assert ours("x")[0] == 0 and ours("x")[-1] == 1  # <s> first, <pad> (id 1) fills


def test_tokenizer_from_vocab_and_merges(tmp_path, tiny_checkpoint) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    tok.model.save(str(tmp_path))  # writes vocab.json + merges.txt
    (tmp_path / "tokenizer_config.json").write_bytes((tiny_checkpoint / "tokenizer_config.json").read_bytes())
    text = "stack the green cube on the blue cube"
    assert TextTokenizer(tmp_path)(text).tolist() == TextTokenizer(tiny_checkpoint)(text).tolist()


def test_missing_tokenizer_is_named(tmp_path) -> None:
    from xvla.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no tokenizer found"):
        TextTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("garbage")
    with pytest.raises(CheckpointError, match="tokenizer files could not be read"):
        TextTokenizer(tmp_path)


def test_a_missing_preprocessor_file_needs_an_explicit_size(tmp_path) -> None:
    from xvla.errors import CheckpointError

    with pytest.raises(CheckpointError, match="preprocessor_config.json: missing.*--image-size"):
        ImageProcessor.from_dir(tmp_path)
    proc = ImageProcessor.from_dir(tmp_path, 96)
    assert proc.output_size == (96, 96) and proc.resample == 3 and proc.mean == IMAGENET_MEAN
    for bad in (0, True, 10**6, 64.0):
        with pytest.raises(CheckpointError, match="image size"):
            ImageProcessor.from_dir(tmp_path, bad)
