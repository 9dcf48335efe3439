"""`edgecap bench`: where the time of a caption goes on this machine, and how far each stage is from its floor.

Stages are timed on the same photos, configurations interleaved photo by photo so that
a noisy neighbour slows all of them alike. CPU time is reported next to wall time: on a
shared machine it is the steadier figure, and CPU > wall means a spinning extra thread.
`--compare` adds the PyTorch / plain onnxruntime / optimum side (bench/compare.py, run
in a child process because edgecap itself never imports torch) and writes
docs/performance.md (edgecap/evaluation/bench_report.py). Keys of the JSON report are listed in
docs/performance.md.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecap.core.image import as_rgb, exposure_problem, normalize, read_image
from edgecap.evaluation.floors import Floors, decoder_weight_bytes, graph_macs, measure_floors

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {}
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "min_ms": round(float(a.min()), 3), "n": int(a.size)}


def photo_paths(paths: list[str], images_dir: Path | None, limit: int) -> list[Path]:
    found = [Path(p) for p in paths]
    if images_dir is not None:
        if not images_dir.is_dir():
            raise ValueError(f"{images_dir}: not a folder of photos")
        found += sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        found = sorted(ASSETS.glob("*.jpg"))
    if not found:
        raise ValueError("no photos to benchmark: pass --images DIR or some paths")
    return found[:limit]


class _Clock:
    """Wall and process CPU time of one block, in ms."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall_ms = (time.perf_counter() - self.wall) * 1000
        self.cpu_ms = (time.process_time() - self.cpu) * 1000


def stage_times(captioner, paths: list[Path], options, runs: int, warmup: int) -> dict:
    """Per-stage wall (and CPU) ms of the default caption, one photo at a time."""
    from edgecap.core.model import VisualFeatures

    from edgecap.caption import perceive

    stages: dict[str, list[float]] = {k: [] for k in ("read", "preprocess", "encoder", "perception",
                                                      "decode", "rerank", "total")}
    cpu_total, steps = [], []
    prep = captioner.bundle.preprocessing
    for run in range(warmup + runs):
        for path in paths:
            t = {}
            with _Clock() as total:
                with _Clock() as c:
                    image = read_image(path)
                t["read"] = c.wall_ms
                with _Clock() as c:
                    exposure_problem(as_rgb(image))
                    pixels = normalize(captioner.preprocess(image), prep)[None]
                t["preprocess"] = c.wall_ms
                with _Clock() as c:
                    cross_k, cross_v, pooled = captioner.encoder.run(["cross_k", "cross_v", "pooled"],
                                                                     {"pixels": pixels})
                t["encoder"] = c.wall_ms
                features = VisualFeatures(cross_k, cross_v, pooled)
                with _Clock() as c:
                    perceive(captioner, image, pooled[0])
                t["perception"] = c.wall_ms
                with _Clock() as c:
                    pool = captioner.candidates(features, options)[0]
                t["decode"] = c.wall_ms
                with _Clock() as c:
                    if len(pool) > 1:
                        captioner._choose_by_memory(pool, captioner.memory.nearest(features.pooled)[0])
                t["rerank"] = c.wall_ms
            t["total"] = total.wall_ms
            if run >= warmup:
                for name, value in t.items():
                    stages[name].append(value)
                cpu_total.append(total.cpu_ms)
                steps.append(max(len(d.tokens) for d in pool) + 1)
    report = {name: stats(v) for name, v in stages.items() if v}
    return {"stages": report, "cpu_ms": stats(cpu_total), "mean_steps": round(float(np.mean(steps)), 1)}


def configurations(options) -> dict[str, object]:
    """The shipped default and the switches that decide its cost."""
    return {"default": options, "sparc_off": replace(options, calibrate=False),
            "rerank_off": replace(options, rerank=False),
            "greedy_rerank_off": replace(options, beam_size=1, rerank=False)}


def interleaved_captions(captioner, images: list[np.ndarray], configs: dict, runs: int, warmup: int) -> dict:
    """Whole-caption (the spoken decision, perception included) wall and CPU ms per configuration,
    photo by photo in turn."""
    from edgecap.caption import describer_for

    describer = describer_for(captioner)
    wall = {k: [] for k in configs}
    cpu = {k: [] for k in configs}
    for run in range(warmup + runs):
        for image in images:
            for name, options in configs.items():
                with _Clock() as c:
                    describer.describe([image], options)
                if run >= warmup:
                    wall[name].append(c.wall_ms)
                    cpu[name].append(c.cpu_ms)
    return {name: {**stats(wall[name]), "cpu_median_ms": round(float(np.median(cpu[name])), 3)} for name in configs}


def throughput(captioner, images: list[np.ndarray], options, batch_sizes=(1, 4, 8), rounds: int = 2) -> dict:
    """Spoken captions per second when a batch of photos is described in one call."""
    from edgecap.caption import describer_for

    describer = describer_for(captioner)
    out = {}
    for b in batch_sizes:
        batch = [images[i % len(images)] for i in range(b)]
        captioner._features.clear()
        describer.describe(batch, options)
        times = []
        for _ in range(rounds):
            captioner._features.clear()  # a repeated frame would skip the encoder
            with _Clock() as c:
                describer.describe(batch, options)
            times.append(c.wall_ms)
        out[str(b)] = round(b / (float(np.median(times)) / 1000), 2)
    return out


def decoder_step(captioner, rows: int = 1, past: int = 8, repeats: int = 200) -> dict:
    """The decoder graph alone: one step of `rows` rows after `past` tokens."""
    dec = captioner.decoder
    arch = captioner.arch
    rng = np.random.default_rng(0)
    from edgecap.core.model import VisualFeatures

    visual = VisualFeatures(*(rng.standard_normal((arch.n_layers, 1, arch.n_heads, arch.n_visual, arch.head_dim))
                              .astype(np.float32) for _ in range(2)), np.zeros((1, arch.pooled_dim), np.float32))
    rows_visual = dec.start(visual, rows)
    gain = np.ones((arch.n_layers, rows, arch.n_visual), np.float32)
    ids = rng.integers(4, arch.vocab_size, size=(rows, past)).astype(np.int64)
    token = ids[:, :1]
    wall, cpu = [], []
    for _ in range(repeats):
        # A fresh prefix each time: onnxruntime < 1.30 may overwrite a bound step's inputs in place,
        # so stepping twice from one cache would grow it past max_length.
        _, cache, _ = dec.step(ids, dec.empty_cache(rows), rows_visual, gain)
        with _Clock() as c:
            dec.step(token, cache, rows_visual, gain)
        wall.append(c.wall_ms)
        cpu.append(c.cpu_ms)
    return {"median_ms": round(float(np.median(wall)), 4), "cpu_median_ms": round(float(np.median(cpu)), 4)}


def greedy_decode_step(captioner, images: list[np.ndarray], options, runs: int) -> dict:
    """A decoder step with the Python loop around it: the greedy decode alone (features computed
    beforehand; no exposure gate, encoder or perception) divided by its decoder runs."""
    features = [captioner.encode([image]) for image in images]
    wall, cpu = [], []
    for run in range(runs + 1):
        for f in features:
            with _Clock() as c:
                tokens = captioner.candidates(f, options)[0][0].tokens
            if run:
                steps = min(len(tokens) + 1, options.max_length)  # the prompt run, then one per token
                wall.append(c.wall_ms / steps)
                cpu.append(c.cpu_ms / steps)
    return {"decoder_step_ms": round(float(np.median(wall)), 4),
            "decoder_step_cpu_ms": round(float(np.median(cpu)), 4)}


COLD_START_RUNS = 5


def cold_start(model_dir: Path, photo: Path, threads: int | None, provider: str) -> dict:
    """Fresh processes: import, load and verify the bundle, speak the caption of one photo; peak RSS
    after five more.

    `cold_start_s` runs from the moment the child is launched (the parent's clock: interpreter
    start-up included) to its first spoken caption; `cold_start_cpu_s` is the child's CPU time by
    then, all its threads. Python bytecode is kept as an installed edgecap has it: in a private
    cache, written by a first run that is reported apart (`cold_start_first_run_s`: it compiles
    edgecap's modules, as a first start after installing from source would)."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import json, os, resource, sys\n"
        "from edgecap.core.early import start_loading  # as `edgecap caption` loads\n"
        f"started = start_loading({str(model_dir)!r}, provider={provider!r}, threads={threads!r})\n"
        "from edgecap.core.model import OnnxCaptioner\n"
        "from edgecap.caption import describer_for\n"
        "from edgecap.core.image import read_image\n"
        "from edgecap.core.decoding import preset\n"
        "from edgecap.vision.perception import Perceiver\n"
        "c = OnnxCaptioner.finish(started, perception=Perceiver.from_bundle)\n"
        "t1 = time.perf_counter()\n"
        f"image = read_image({str(photo)!r})\n"
        "d = describer_for(c); d.describe([image], preset('brief'))\n"
        "t2 = time.perf_counter()\n"
        "use = resource.getrusage(resource.RUSAGE_SELF); cpu = use.ru_utime + use.ru_stime\n"
        "for _ in range(5):\n"
        "    c._features.clear(); d.describe([image], preset('brief'))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "try:  # this process's own high-water mark: ru_maxrss starts at the parent's (Linux keeps it over exec)\n"
        "    peak = next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "except (OSError, StopIteration):\n"
        "    pass\n"
        "launched = float(os.environ['EDGECAP_BENCH_LAUNCHED'])  # the parent's perf_counter: the same clock\n"
        "print(json.dumps({'import_and_load_s': t1 - t0, 'cold_start_s': t2 - launched, 'cold_start_cpu_s': cpu,\n"
        "                  'interpreter_start_s': t0 - launched, 'peak_rss_mb': peak}))\n")
    runs = []
    with tempfile.TemporaryDirectory() as pycache:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   PYTHONPYCACHEPREFIX=pycache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for _ in range(1 + COLD_START_RUNS):
            env["EDGECAP_BENCH_LAUNCHED"] = repr(time.perf_counter())
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, runs = runs[0], runs[1:]
    report = {k: round(float(np.median([r[k] for r in runs])), 3) for k in runs[0]}
    report["cold_start_first_run_s"] = round(first["cold_start_s"], 3)
    return report


def bundle_size_mb(bundle) -> float:
    return round(sum((bundle.path / rel).stat().st_size for rel in bundle.manifest["sha256"]) / 1e6, 2)


def floors_report(captioner, floors: Floors, step_ms: float, encoder_ms: float) -> dict:
    """Each stage's floor from this machine's measured bandwidth and int8 throughput."""
    out = {"memory_bandwidth_gbs": floors.bandwidth_gbs, "int8_tops": floors.int8_tops}
    weights = decoder_weight_bytes(captioner.bundle.read_verified("decoder"))
    macs = graph_macs(captioner.bundle.read_verified("encoder"))
    if weights:
        floor = weights / (floors.bandwidth_gbs * 1e9) * 1000
        out.update(decoder_weight_mb=round(weights / 1e6, 2), decoder_step_floor_ms=round(floor, 4),
                   decoder_step_vs_floor=round(step_ms / floor, 2))
    if macs:
        floor = 2 * macs / (floors.int8_tops * 1e12) * 1000
        out.update(encoder_gflop=round(2 * macs / 1e9, 3), encoder_floor_ms=round(floor, 4),
                   encoder_vs_floor=round(encoder_ms / floor, 2))
    return out


def run_bench(args, captioner) -> int:
    from edgecap.cli_args import decoding_options

    paths = photo_paths(args.paths, args.images, args.limit)
    images = [read_image(p) for p in paths]
    options = decoding_options(args, captioner)
    report = {"model": captioner.bundle.name, "provider": captioner.provider,
              "threads": captioner.threads or "default", "photos": len(paths), "runs": args.runs,
              "beams": options.beam_size, "calibration": options.calibrate,
              "rerank": options.rerank and captioner.memory is not None,
              "contention_load_avg": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    report.update(stage_times(captioner, paths, options, args.runs, args.warmup))
    configs = interleaved_captions(captioner, images, configurations(options), args.runs, args.warmup)
    report["configurations"] = configs
    default = configs["default"]
    report["total_ms"] = default["median_ms"]
    report["cpu_per_wall"] = round(default["cpu_median_ms"] / default["median_ms"], 3)
    report["sparc_overhead"] = round(configs["default"]["median_ms"] / configs["sparc_off"]["median_ms"] - 1, 3)
    report.update(greedy_decode_step(captioner, images, configurations(options)["greedy_rerank_off"], args.runs))
    report["decoder_graph_step"] = decoder_step(captioner)
    report["captions_per_s"] = throughput(captioner, images, options)
    report.update(cold_start(captioner.bundle.path, paths[0], args.threads, args.provider))
    report["peak_rss_mb_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["bundle_mb"] = bundle_size_mb(captioner.bundle)
    floors = measure_floors()
    report["floors"] = floors_report(captioner, floors, report["decoder_graph_step"]["median_ms"],
                                     report["stages"]["encoder"]["median_ms"])
    for key in ("decoder_step_floor_ms", "encoder_floor_ms"):
        if key in report["floors"]:
            report[key] = report["floors"][key]
    if args.compare:
        from edgecap.evaluation.bench_report import run_compare, write_performance_doc

        report["compare"] = run_compare(captioner, paths, args)
        report.update({k: v for k, v in report["compare"].get("ratios", {}).items()})
        doc = write_performance_doc(report, ROOT / "docs")
        print(f"wrote {doc}", file=sys.stderr)
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.json != "-":
        print_summary(report)
    return 0


def print_summary(report: dict) -> None:
    print(f"model {report['model']} on {report['provider']}, {report['threads']} thread(s), "
          f"{report['photos']} photos x {report['runs']} runs; load average {report['contention_load_avg']} "
          f"on {report['cores']} cores")
    for name, s in report["stages"].items():
        print(f"  {name:<11} median {s['median_ms']:8.2f} ms   p90 {s['p90_ms']:8.2f} ms")
    for name, s in report["configurations"].items():
        print(f"  caption {name:<18} median {s['median_ms']:8.2f} ms  p90 {s['p90_ms']:8.2f} ms  "
              f"CPU {s['cpu_median_ms']:8.2f} ms")
    f = report["floors"]
    print(f"  decoder step {report['decoder_graph_step']['median_ms']:.3f} ms in the graph, "
          f"{report['decoder_step_ms']:.3f} ms with the loop (CPU {report['decoder_step_cpu_ms']:.3f}); "
          f"floor {f.get('decoder_step_floor_ms', float('nan')):.3f} ms")
    print(f"  encoder {report['stages']['encoder']['median_ms']:.2f} ms; floor {f.get('encoder_floor_ms', float('nan')):.3f} ms")
    print(f"  captions/s at batch 1/4/8: {report['captions_per_s']}; cold start {report.get('cold_start_s')} s "
          f"(CPU {report.get('cold_start_cpu_s')} s; first run {report.get('cold_start_first_run_s')} s); "
          f"peak RSS {report.get('peak_rss_mb')} MB; bundle {report['bundle_mb']} MB; "
          f"CPU/wall {report['cpu_per_wall']}")
    for key in ("speedup_vs_torch", "speedup_vs_optimum"):
        if key in report:
            print(f"  {key} {report[key]}")
