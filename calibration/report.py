"""A gate report as a table (stdout), JSON, and a PNG of the error distributions (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.check import GateReport, arm_name
from calibration.errors import CalibrationError
from xvla.extras import MissingDependency

METRICS = (("position_mm", "position error (mm)"), ("rotation_deg", "rotation error (deg)"),
           ("joint_deg", "joint error (deg)"))


def format_table(report: GateReport) -> str:
    ref = report.reference
    lines = [f"gate: {report.bundle} ({report.precision}, {report.backend}) vs {ref['kind']} {ref['path']} "
             f"({ref['backend']})",
             f"set: {report.set['path']}: {report.set['observations']} observations, {report.steps} steps, "
             "shared noise from the set's seeds; errors over every waypoint of every chunk",
             f"{'arm':<6} {'metric':<14} {'p50':>10} {'p99':>10} {'max':>10} {'limit':>8}"]
    tol = report.tolerance
    for arm in report.arms:
        name = "all" if arm.arm is None else str(arm.arm)
        summary = arm.errors.summary()
        for key, _ in METRICS:
            if key in summary:
                s, limit = summary[key], getattr(tol, key)
                lines.append(f"{name:<6} {key:<14} {s['p50']:>10.4g} {s['p99']:>10.4g} {s['max']:>10.4g} "
                             f"{_limit(limit):>8} {_verdict(s['max'], limit)}")
        if report.mode != "auto":
            flips = arm.errors.gripper_flips
            lines.append(f"{name:<6} {'gripper_flips':<14} {'':>10} {'':>10} {flips:>10d} "
                         f"{_limit(tol.gripper_flips):>8} {_verdict(flips, tol.gripper_flips)}")
        lines.append(f"{name:<6} {'max_abs':<14} {'':>10} {'':>10} {arm.errors.max_abs:>10.3g} "
                     f"{_limit(tol.max_abs):>8} {_verdict(arm.errors.max_abs, tol.max_abs)}")
    lines.append("PASSED" if report.passed else "FAILED: " + "; ".join(report.failures))
    return "\n".join(lines)


def _limit(limit: float | None) -> str:
    return "-" if limit is None else f"{limit:g}"


def _verdict(value: float, limit: float | None) -> str:
    if limit is None:
        return ""
    return "ok" if value <= limit else "FAIL"


def write_json(report: GateReport, path: str | Path) -> None:
    try:
        Path(path).write_text(json.dumps(report.to_dict(), indent=2))
    except OSError as e:
        raise CalibrationError(f"--json {path}: cannot write ({e})") from None


def plot(report: GateReport, path: str | Path) -> None:
    """Empirical CDFs of each error metric per arm (log x axis), with the tolerance as a dashed line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError as exc:
        raise MissingDependency.of("test", exc, needed_by="--plot") from None
    present = [(key, label) for key, label in METRICS if any(a.errors.values(key).size for a in report.arms)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(5.5 * max(1, len(present)), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], present):
        for arm in report.arms:
            v = np.sort(arm.errors.values(key))
            ax.plot(np.maximum(v, 1e-6), np.arange(1, v.size + 1) / v.size, label=arm_name(arm.arm))
        limit = getattr(report.tolerance, key)
        if limit is not None:
            ax.axvline(limit, color="red", linestyle="--", label=f"limit {limit:g}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of waypoints ≤ x")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    if not present:
        axes[0][0].text(0.5, 0.5, f"action mode {report.mode!r}: no physical error metric\n"
                        f"max |Δ| {max(a.errors.max_abs for a in report.arms):.3g}", ha="center", va="center")
        axes[0][0].set_axis_off()
    verdict = "PASSED" if report.passed else "FAILED"
    fig.suptitle(f"{Path(report.bundle).name} ({report.precision}) vs {report.reference['kind']}: "
                 f"{report.set['observations']} observations, {report.steps} steps — {verdict}")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise CalibrationError(f"--plot {path}: cannot write ({e})") from None
    finally:
        plt.close(fig)
