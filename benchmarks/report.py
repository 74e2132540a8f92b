"""The results files of a latency run: ``<machine-id>/<sizes>.{json,md,png}`` from pytest-benchmark's JSON.

The JSON is what :mod:`benchmarks.suites` gets from the latency suite (machine details in ``machine_info``,
work and floors in every benchmark's ``extra_info``); the markdown has the machine details and a table of
median, floor, ratio and official/ours per stage, size and backend; the PNG plots medians against floors.
Standard library at import; matplotlib is imported by :func:`plot`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks.names import BACKENDS, REFERENCE, SIZES, STAGES


def machine_id(cpu_model: str, cores: int, arch: str) -> str:
    """A short slug such as ``x86_64-amd-epyc-2c``."""
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", "", cpu_model.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{arch}-{slug}-{cores}c"


def write_results(data: dict[str, Any], root: Path, machine: str | None = None) -> tuple[Path, str]:
    """``<root>/<machine-id>/<sizes>.{json,md,png}``; returns (directory, file stem)."""
    info = data["machine_info"]["xvla"]
    out = root / (machine or machine_id(info["cpu_model"], info["cores"], data["machine_info"]["machine"]))
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(data)
    bundles = list(dict.fromkeys(r["bundle_id"][:12] for r in rows if r["size"] == "bundle"))
    label = "-".join([s for s in dict.fromkeys(r["size"] for r in rows) if s != "bundle"]
                     + [f"bundle-{b}" for b in bundles])
    (out / f"{label}.json").write_text(json.dumps(data, indent=2))
    (out / f"{label}.md").write_text(markdown(data, rows))
    plot(rows, out / f"{label}.png", f"X-VLA latency vs floor: {info['cpu_model']}, {info['cores']} cores")
    return out, label


def result_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmark: extra_info, stats and the official/ours ratio of its (stage, size): the side-by-side
    one (median of the per-round ratios of interleaved rounds) where the run has it, else (runs before the
    side-by-side rounds) the ratio of the two medians."""
    rows = [{**b["extra_info"], "median_s": b["stats"]["median"], "iqr_s": b["stats"]["iqr"],
             "rounds": b["stats"]["rounds"]} for b in data["benchmarks"] if "stage" in b["extra_info"]]
    official = {(r["stage"], r["size"]): r["median_s"] for r in rows if r["backend"].startswith("official")}
    side = data["machine_info"]["xvla"].get("side_by_side")
    paired = {(c["stage"], c["size"], r["denominator"]): r for c in side or [] for r in c["ratios"]
              if r["numerator"].startswith("official")}
    for r in rows:
        r["ratio"] = r["median_s"] / r["floor_s"]
        if side is not None:
            pair = paired.get((r["stage"], r["size"], r["backend"]))
            r["official_over_ours"] = pair["median"] if pair else None
            r["official_spread"] = (pair["min"], pair["max"]) if pair else None
            continue
        off = official.get((r["stage"], r["size"]))
        r["official_over_ours"] = off / r["median_s"] if off and not r["backend"].startswith("official") else None
    return sorted(rows, key=lambda r: (_order(SIZES, r["size"]), STAGES.index(r["stage"])))


def _order(known: tuple[str, ...], name: str) -> int:
    """Position of ``name`` in ``known``; names not there (a bundle, its backend) come after."""
    return known.index(name) if name in known else len(known)


def _t(seconds: float) -> str:
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def markdown(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Machine details, the results table, chunk agreement and the predicted floors on the targets."""
    mi, info, commit = data["machine_info"], data["machine_info"]["xvla"], data["commit_info"]
    m = info["machine"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    steps = max(r["steps"] for r in rows)
    interesting = [f for f in info["flags"] if re.match(r"avx|fma|f16c|amx|sve|asimd|neon|bf16|vnni", f)]
    bundle = next((r for r in rows if r["size"] == "bundle"), None)
    if bundle is None:
        what = f"`xvla-edge bench --size {' '.join(sizes)}` ({steps}-step chunks), random weights."
    else:
        what = (f"`xvla-edge bench --bundle {bundle['bundle']} --backend {bundle['backend'].rsplit('-', 1)[0]} "
                f"--device {bundle['device']}` ({steps}-step chunks): bundle `{bundle['bundle_id'][:12]}` "
                f"({bundle['embodiment']}, {bundle['precision']}). Its floor is the weight floor only: the graph's "
                "weights streamed once per call at the measured bandwidth (a bundle records no FLOP count).")
    lines = [
        f"# X-VLA latency: {info['cpu_model']}, {info['cores']} cores ({', '.join(sizes)})", "",
        f"Measured {data['datetime'][:19]} UTC at commit `{commit.get('id', '?')[:10]}`"
        f"{' (uncommitted changes)' if commit.get('dirty') else ''} with {what}", "",
        "## Machine", "",
        f"- CPU: {info['cpu_model']} ({mi['machine']}), {info['cores']} cores; kernel {mi['release']}",
        f"- SIMD flags: {' '.join(interesting) or 'none reported'}",
        f"- Measured: **{m['gflops']:.1f} GFLOP/s** fp32 GEMM, **{m['gbps']:.1f} GB/s** copy ({m['method']}); "
        f"{rows[0]['threads']} intra-op thread(s) per backend",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- Load average (1 min) {info['loadavg_start'][0]:.2f} at the start, {info['loadavg_end'][0]:.2f} at the "
        f"end, {max(r['loadavg'][0] for r in rows):.2f} at most after a benchmark (the benchmark itself accounts "
        f"for up to {rows[0]['threads']}). **This machine is shared**: "
        "other processes may have run during the measurements, so absolute times are noisy; "
        + ("the side-by-side ratios (backends round by round, A B A B ..., on the same inputs; the median of the "
           "per-round ratios with its min–max) are the figures to compare." if "side_by_side" in info else
           "ratios taken in this one run (official / ours, fp16 / fp32) are the figures to compare."),
    ]
    if "official" in info:
        o = info["official"]
        lines.append(f"- Official implementation: `{o['source']}` run by `{o['python']}` "
                     f"({', '.join(f'{k} {v}' for k, v in o['versions'].items())}); loaded our checkpoint with "
                     f"`XVLA.from_pretrained` (missing keys: {', '.join(o['missing_keys']) or 'none'})")
    lines += [
        "", "## Results", "",
        "median of `rounds`; floor = max(FLOPs / GEMM rate, weight bytes / bandwidth) on this machine "
        "(`benchmarks/floor.py`); ratio = median / floor; official / ours > 1: ours is faster. `act` is "
        "`Policy.act` with preprocessing of three 480×640 camera images (the floor counts the network only).", "",
        "| stage | size | backend | median | IQR | rounds | floor | ratio | official / ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off = f"{r['official_over_ours']:.2f}" if r["official_over_ours"] else ""
        if r.get("official_spread"):
            off += f" ({r['official_spread'][0]:.2f}–{r['official_spread'][1]:.2f})"
        lines.append(f"| {r['stage']} | {r['size']} | {r['backend']} | {_t(r['median_s'])} | {_t(r['iqr_s'])} | "
                     f"{r['rounds']} | {_t(r['floor_s'])} | {r['ratio']:.1f} | {off} |")
    agreement = [f"{r['size']} {r['backend']}: {r['max_abs_diff_vs'][REFERENCE]:.1e}" for r in rows
                 if REFERENCE in r.get("max_abs_diff_vs", {})]
    if agreement:
        lines += ["", f"Chunk agreement with {REFERENCE} (max |Δaction|, same weights, inputs and noise): "
                  + "; ".join(agreement)]
    lines += side_by_side_lines(info.get("side_by_side") or [])
    for case, why in info.get("not_measured", {}).items():
        lines += ["", f"Not measured: {case}: {why}"]
    targets = [t for t in info["targets"] if t["size"] == "full"]
    lines += ["", f"## Predicted floors of the full model on the deployment targets ({steps}-step chunk, fp16 weights)",
              "", "| target | peak | bandwidth | encoder | step | chunk |", "|---|---|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['tflops']:g} TFLOPS | {t['gbps']:g} GB/s | {_t(t['encoder_s'])} | "
              f"{_t(t['step_s'])} | {_t(t['chunk_s'])} |" for t in targets]
    lines += ["", "Sources: " + "; ".join(f"{t['target']}: {t['source']}" for t in targets) + "."]
    return "\n".join(lines) + "\n"


def side_by_side_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """The side-by-side section: every ratio of the interleaved rounds (none: no lines)."""
    if not comparisons:
        return []
    lines = ["", "## Side by side", "",
             "The backends of a size, round by round (A B A B ..., the same inputs), for each stage; a ratio is the "
             "median of the per-round ratios (round i: the numerator's time over the denominator's in that round), "
             "with the smallest and largest per-round ratio. official / ours > 1: ours is faster.", "",
             "| stage | size | ratio | median | min–max | rounds |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines += [f"| {c['stage']} | {c['size']} | {r['numerator']} / {r['denominator']} | {r['median']:.2f} | "
                  f"{r['min']:.2f}–{r['max']:.2f} | {r['rounds']} |" for r in c["ratios"]]
    return lines


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Medians (bars) and floors (black ticks) per stage and backend, one panel per size, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(dict.fromkeys(r["size"] for r in rows), key=lambda s: _order(SIZES, s))
    backends = sorted(dict.fromkeys(r["backend"] for r in rows), key=lambda b: (_order(BACKENDS, b), b))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    width = 0.8 / len(backends)
    for ax, size in zip(axes[0], sizes):
        for j, backend in enumerate(backends):
            for i, stage in enumerate(STAGES):
                r = next((r for r in rows if (r["size"], r["backend"], r["stage"]) == (size, backend, stage)), None)
                if r is None:
                    continue
                x = i + (j - (len(backends) - 1) / 2) * width
                ax.bar(x, r["median_s"], width, color=f"C{backends.index(backend)}", label=backend)
                ax.hlines(r["floor_s"], x - width / 2, x + width / 2, colors="k", linewidth=2)
        ax.set_yscale("log")
        ax.set_xticks(range(len(STAGES)), STAGES)
        ax.set_title(size)
        ax.set_ylabel("seconds (median; black: floor)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0][0].legend(unique.values(), unique.keys(), loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
