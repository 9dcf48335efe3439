"""`edgecap bench --compare`: run bench/compare.py in a child process, work out the ratios, write docs/performance.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARE_SCRIPT = ROOT / "bench" / "compare.py"

TARGETS = {  # issue #13, batch 1, one thread, the shipped default
    "total_ms": ("<=", 40.0),
    "decoder_step_vs_floor": ("<=", 2.0),
    "encoder_vs_floor": ("<=", 5.0),
    "speedup_vs_torch": (">=", 5.0),
    "speedup_vs_optimum": (">=", 1.5),
    "sparc_overhead": ("<=", 0.05),
    "cold_start_s": ("<=", 0.4),
    "peak_rss_mb": ("<=", 150.0),
    "cpu_per_wall": ("<=", 1.1),
}

KEYS = {
    "total_ms": "median wall ms of one default caption (exposure gate, encoder, candidate pool, rerank), batch 1",
    "stages": "per stage median/p90/min ms: read, preprocess, encoder, perception (when edgecap.caption "
              "provides `perceive`), decode (the candidate pool loop), rerank, total",
    "configurations": "whole caption per configuration (default, sparc_off, rerank_off, greedy_rerank_off), "
                      "interleaved photo by photo, with median CPU ms",
    "cpu_per_wall": "process CPU time / wall time of the default caption (> 1: a spinning extra thread)",
    "sparc_overhead": "default / sparc_off - 1",
    "decoder_step_ms": "greedy decode alone (features given; rerank off) wall ms / decoder runs: a step "
                       "including the Python loop (`decoder_step_cpu_ms`: the same in CPU time)",
    "decoder_graph_step": "the decoder graph alone, 1 row after 8 tokens (IO binding), wall and CPU ms",
    "decoder_step_floor_ms": "bytes of the weights a step multiplies by / measured memory bandwidth",
    "encoder_floor_ms": "encoder operations (2 x multiply-adds) / measured int8 matmul throughput",
    "captions_per_s": "captions per second with 1, 4 and 8 photos per call",
    "cold_start_s": "fresh process, from its launch (interpreter start-up included) to the first spoken caption: "
                    "import, load and verify the bundle, caption one photo; median of 5, bytecode cached",
    "cold_start_cpu_s": "that process's CPU time by then, all threads (the bundle loads on two threads)",
    "cold_start_first_run_s": "the same for the first run, which compiles edgecap's bytecode",
    "peak_rss_mb": "that process's peak resident memory (VmHWM) after six captions",
    "bundle_mb": "bytes of the bundle's hashed files",
    "speedup_vs_torch": "PyTorch eager / edgecap, same architecture, 15 forced greedy tokens, SPARC off",
    "speedup_vs_plain_onnxruntime": "a plain session.run loop over the same graphs / edgecap",
    "speedup_vs_optimum": "optimum ORTModelForVision2Seq int8 / edgecap int8 bundle of the same converted "
                          "ViT-GPT2 checkpoint, 15 forced greedy tokens",
    "speedup_vs_optimum_fp32": "the same, both fp32",
    "*_cpu": "each speedup also from process CPU time (steadier than wall time on a shared machine)",
    "contention_load_avg": "1-minute load average when the run started: above the core count, timings are "
                           "inflated by other processes",
}


def run_compare(captioner, paths: list[Path], args) -> dict:
    """bench/compare.py in a child process; the optimum part may run under another interpreter
    ($EDGECAP_OPTIMUM_PYTHON), since optimum's onnxruntime package pins an older transformers."""
    if not COMPARE_SCRIPT.exists():
        return {"skipped": f"{COMPARE_SCRIPT} is missing: --compare runs from a source checkout"}
    photos = [str(p) for p in paths[:args.compare_photos]]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        report = _compare_child(sys.executable, captioner.bundle.path, photos, "", checkpoint)
        other = os.environ.get("EDGECAP_OPTIMUM_PYTHON")
        if other and "skipped" in report.get("optimum", {"skipped": ""}):
            optimum = _compare_child(other, captioner.bundle.path, photos, "edgecap,torch,plain,converted",
                                     checkpoint).get("optimum")
            if optimum:
                report["optimum"] = {**optimum, "python": other}
    report["ratios"] = ratios(report)
    return report


def _compare_child(python: str, model: Path, photos: list[str], skip: str, checkpoint: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare.json"
        cmd = [python, str(COMPARE_SCRIPT), "--model", str(model), "--json", str(out), "--skip", skip,
               "--checkpoint", str(checkpoint), *photos]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if not out.exists():
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            return {"skipped": f"bench/compare.py failed: {last[0]}"}
        return json.loads(out.read_text())


def ratios(c: dict) -> dict:
    out = {}

    def ratio(key, part, slow, fast, source=None):
        for suffix, unit in (("", "_ms"), ("_cpu", "_cpu_ms")):  # wall, and CPU (steadier when shared)
            a = c.get(part, {}).get(slow + unit)
            b = c.get(source or part, {}).get(fast + unit)
            if a and b:
                out[key + suffix] = round(a / b, 2)
    ratio("speedup_vs_torch", "torch", "caption", "caption", "edgecap")
    ratio("speedup_vs_torch_encoder", "torch", "encoder", "encoder", "edgecap")
    ratio("speedup_vs_plain_onnxruntime", "plain", "caption", "caption", "edgecap")
    ratio("speedup_vs_optimum", "optimum", "optimum_int8", "edgecap_int8", "converted")
    ratio("speedup_vs_optimum_fp32", "optimum", "optimum_fp32", "edgecap_fp32", "converted")
    return out


def target_rows(report: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    values = {**report, **report.get("floors", {})}
    for key, (op, limit) in TARGETS.items():
        value = values.get(key)
        if value is None:
            rows.append((key, f"{op} {limit:g}", "not measured", ""))
            continue
        met = value <= limit if op == "<=" else value >= limit
        rows.append((key, f"{op} {limit:g}", f"{value:g}", "met" if met else "**missed**"))
    return rows


def write_performance_doc(report: dict, docs: Path) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    chart = write_chart(report, docs / "performance.png")
    lines = ["# Performance", "",
             "Written by `edgecap bench --compare --json docs/performance.json` (edgecap/evaluation/bench.py, bench/compare.py). "
             f"Model `{report['model']}` on {report['provider']}, {report['threads']} thread(s), "
             f"{report['photos']} photos x {report['runs']} runs, {report['cores']} cores, load average "
             f"{report['contention_load_avg']} at the start"
             + (" — **the machine was shared: wall times are inflated; CPU times are the steadier figure**."
                if report["contention_load_avg"] > (report["cores"] or 1) else "."), "",
             "## Targets (issue #13)", "", "| key | target | measured | |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {v} | {m} |" for k, t, v, m in target_rows(report)]
    lines += ["", "## Where a default caption goes", "", "| stage | median ms | p90 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} |" for name, s in report["stages"].items()]
    lines += ["", "| configuration | median ms | p90 ms | CPU ms |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['cpu_median_ms']:.2f} |"
              for name, s in report["configurations"].items()]
    f = report.get("floors", {})
    lines += ["", "## Floors (measured at run time)", "",
              f"- memory bandwidth (copy, one thread): {f.get('memory_bandwidth_gbs')} GB/s; "
              f"int8 matmul: {f.get('int8_tops')} TOP/s",
              f"- decoder step: {report['decoder_graph_step']['median_ms']:.3f} ms in the graph "
              f"(CPU {report['decoder_graph_step']['cpu_median_ms']:.3f}), {report['decoder_step_ms']:.3f} ms with "
              f"the loop; floor {f.get('decoder_step_floor_ms')} ms ({f.get('decoder_weight_mb')} MB of weights): "
              f"{f.get('decoder_step_vs_floor')}x",
              f"- encoder: {report['stages']['encoder']['median_ms']:.2f} ms; floor {f.get('encoder_floor_ms')} ms "
              f"({f.get('encoder_gflop')} GFLOP): {f.get('encoder_vs_floor')}x",
              f"- captions/s at batch 1/4/8: {report['captions_per_s']}; cold start {report.get('cold_start_s')} s; "
              f"peak RSS {report.get('peak_rss_mb')} MB; bundle {report['bundle_mb']} MB"]
    c = report.get("compare", {})
    if c:
        lines += ["", "## Side by side (15 forced greedy tokens, SPARC and rerank off, one thread)", "",
                  "| path | ms per caption |", "|---|---:|"]
        for label, value in comparison_rows(c):
            lines.append(f"| {label} | {value} |")
        lines += ["", "Ratios: " + ", ".join(f"`{k}` {v}" for k, v in c.get("ratios", {}).items())]
        for name, part in c.items():
            if isinstance(part, dict) and "skipped" in part:
                lines.append(f"- {name}: skipped ({part['skipped']})")
    if chart:
        lines += ["", f"![per-stage and side-by-side timings]({chart.name})"]
    lines += ["", "## Keys of `--json`", ""] + [f"- `{k}`: {v}" for k, v in KEYS.items()]
    path = docs / "performance.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def comparison_rows(c: dict) -> list[tuple[str, str]]:
    rows = []
    for label, part, key in (("edgecap (shipped bundle)", "edgecap", "caption_ms"),
                             ("PyTorch eager, same architecture", "torch", "caption_ms"),
                             ("plain onnxruntime loop, same graphs", "plain", "caption_ms"),
                             ("optimum ORTModelForVision2Seq fp32 (ViT-GPT2)", "optimum", "optimum_fp32_ms"),
                             ("edgecap bundle of that checkpoint, fp32", "converted", "edgecap_fp32_ms"),
                             ("optimum ORTModelForVision2Seq int8 (ViT-GPT2)", "optimum", "optimum_int8_ms"),
                             ("edgecap bundle of that checkpoint, int8", "converted", "edgecap_int8_ms")):
        value = c.get(part, {}).get(key)
        if value is not None:
            rows.append((label, f"{value:.2f}"))
    return rows


def write_chart(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    stages = {k: v["median_ms"] for k, v in report["stages"].items() if k != "total"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(list(stages), list(stages.values()), color="#4c72b0")
    axes[0].set_xlabel("median ms")
    axes[0].set_title(f"default caption: {report['total_ms']:.1f} ms (target 40)")
    axes[0].invert_yaxis()
    rows = comparison_rows(report.get("compare", {}))
    if rows:
        axes[1].barh([r[0] for r in rows], [float(r[1]) for r in rows], color="#dd8452")
        axes[1].set_xlabel("ms per caption, 15 tokens")
        axes[1].set_title("side by side")
        axes[1].invert_yaxis()
    else:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
