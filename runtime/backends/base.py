"""The interface every backend implements; the Policy depends on nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from runtime.manifest import Manifest
from xvla.errors import XVLAError


class BackendError(XVLAError, RuntimeError):
    """A backend could not be created or run as asked (wrong provider, missing engine, ...)."""


class Backend(ABC):
    """Runs one bundle. Arrays in and out are numpy, shapes from the manifest at a batch size it lists
    (``Manifest.batch_sizes``; 1 unless the bundle was exported with more).

    Returned arrays may be reused by the next call: copy what you keep.
    """

    name: str
    graph_fallback: str | None = None  # why a backend that replays CUDA graphs runs without them (None: it does not)

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        """Compute the context of B observations ([B, V, 3, S, S] float32, [B, V] bool, [B, L] int64)."""

    @abstractmethod
    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int) -> np.ndarray:
        """The whole N-step loop on the last encoded context ([B, T, A], [B, P]) → post-processed actions
        [B, T, out]."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""
