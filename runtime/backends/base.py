"""The interface every backend implements; the Policy depends on nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from runtime.manifest import Manifest
from xvla.errors import XVLAError
from xvla.extras import MissingDependency


class BackendError(XVLAError, RuntimeError):
    """A backend could not be created or run as asked (wrong provider, missing engine, ...)."""


class BackendUnavailable(MissingDependency, BackendError):
    """A backend's package is not installed here, or does not import."""


class Backend(ABC):
    """Runs one bundle. Arrays in and out are numpy, shapes from the manifest at a batch size it lists
    (``Manifest.batch_sizes``; 1 unless the bundle was exported with more).

    Returned arrays may be reused by the next call: copy what you keep.
    """

    name: str
    graph_fallback: str | None = None  # why a backend that replays CUDA graphs runs without them (None: it does not)
    #: a batched bundle runs any batch up to its largest size (dynamic shapes), not only the sizes it lists
    #: (those were checked at export; TensorRT has a profile per listed size only)
    any_batch: bool = False

    def batch_for(self, n: int) -> int:
        """The batch that runs ``n`` observations (n ≤ the largest size): n itself where the backend runs any
        batch of a batched bundle, else the smallest listed size that holds them (the rest is padding)."""
        sizes = self.manifest.batch_sizes
        if self.any_batch and len(sizes) > 1 and 1 <= n <= sizes[-1]:
            return n
        return next(b for b in sizes if b >= n)

    def check_batch(self, batch: int) -> None:
        if not 1 <= batch <= self.manifest.batch_sizes[-1] or batch != self.batch_for(batch):
            sizes = list(self.manifest.batch_sizes)
            raise BackendError(f"batch of {batch}: this bundle runs batches of {sizes} (xvla-edge export --batch-sizes)"
                               if len(sizes) > 1 else f"batch of {batch}: this bundle runs batch 1 only "
                               "(export it with --batch-sizes)")

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        """Compute the context of B observations ([B, V, 3, S, S] float32, [B, V] bool, [B, L] int64)."""

    @abstractmethod
    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int, domain_ids: np.ndarray | None = None,
                prefix: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        """The whole N-step loop on the last encoded context ([B, T, A], [B, P]) → post-processed actions
        [B, T, out]. ``domain_ids`` [B] int64: each row's domain, given to a server bundle only (its denoise graph
        takes them; the policy checked that the bundle serves them). ``prefix`` [B, T, A] and ``weights`` [B, T]
        float32: real-time chunking's committed prefix, mixed into every step's prediction (a row of zero weights
        has none), given to a bundle that supports it only (:attr:`Manifest.supports_prefix`; the policy checked
        the rows); None: no prefix, the chunk of a bundle without one."""

    def check_domains(self, domain_ids: np.ndarray | None, batch: int) -> None:
        """:class:`BackendError` unless ``domain_ids`` is given exactly when the bundle is a server bundle, one per
        row."""
        if self.manifest.is_server != (domain_ids is not None):
            raise BackendError("denoise() of a server bundle needs domain_ids, one per row" if self.manifest.is_server
                               else "denoise(): a robot's bundle has its domain folded in; give no domain_ids")
        if domain_ids is not None and np.shape(domain_ids) != (batch,):
            raise BackendError(f"denoise(): domain_ids of shape {np.shape(domain_ids)} for a batch of {batch}")

    def check_prefix(self, prefix: np.ndarray | None, weights: np.ndarray | None, batch: int) -> None:
        """:class:`BackendError` unless ``prefix`` and ``weights`` are both None, or both given to a bundle that
        supports a prefix, float32 of shapes [batch, T, A] and [batch, T]."""
        if (prefix is None) != (weights is None):
            raise BackendError("denoise(): give prefix and weights together, or neither")
        if prefix is None:
            return
        if not self.manifest.supports_prefix:
            raise BackendError("denoise(): this bundle's denoise graph takes no prefix (exported before real-time "
                               "chunking); give none")
        T, A = int(self.manifest.action["chunk_length"]), int(self.manifest.action["dim"])
        for name, value, shape in (("prefix", prefix, (batch, T, A)), ("weights", weights, (batch, T))):
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != np.float32:
                raise BackendError(f"denoise(): {name} must be float32 {list(shape)}; got "
                                   f"{getattr(value, 'dtype', type(value).__name__)} {list(np.shape(value))}")

    def close(self) -> None:
        """Release sessions, engines and device memory."""
