"""One tiny fp32 bundle and one calibration set for the whole session (an export takes ~25 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

SET_SIZE = 12


@pytest.fixture(scope="session")
def fp32_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported for domain 3 (one arm, ee6d), two views."""
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("calibration-bundles") / "fp32"
    export_bundle(tiny_checkpoint, out, ExportOptions(domain_id=3, views=2), progress=lambda _: None)
    return out


@pytest.fixture(scope="session")
def calib_set(fp32_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calibration.capture import synthetic
    from calibration.sets import write_set
    from runtime.manifest import Manifest

    return write_set(synthetic(Manifest.load(fp32_bundle), SET_SIZE, seed=5),
                     tmp_path_factory.mktemp("calibration-sets") / "tiny.calib")
