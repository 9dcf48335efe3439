"""Alt text for a whole photo library (`edgecap describe DIR`), resumable, in worker processes.

`describe_batch` turns photo bytes into JSON records; the worker processes here and the Ray
actors in `edgecap.library.distributed` both call it, and both hand its records to `Library`, which
appends them to the JSON Lines file, writes sidecars and counts. A photo is known by the
SHA-256 of its bytes, so a re-run (after Ctrl-C, a kill or a crash) describes only photos whose
record is not written yet, and a renamed or copied photo reuses its description.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path

import numpy as np

from edgecap.core.decoding import DecodingOptions, preset
from edgecap.core.image import ImageError
from edgecap.library.library_photos import decode_photo, find_photos, photo_hash
from edgecap.library.sidecars import SIDECAR_KINDS, SidecarError, sidecar_path, write_sidecar
from edgecap.progress import Progress

log = logging.getLogger("edgecap")

RESULT_FIELDS = ("confidence", "objects", "faces")  # what the grounded captioner adds, when it does


@dataclass(frozen=True)
class DescribeOptions:
    model: str | None = None  # bundle folder; None: the shipped model
    provider: str = "auto"
    threads: int | None = None  # onnxruntime threads per worker; None: cores // workers
    decoding: DecodingOptions = field(default_factory=lambda: preset("brief"))
    read_text: bool = False
    sidecar: str = "none"  # xmp | txt | none
    workers: int = 1
    batch_size: int = 4  # photos per task handed to a worker

    def __post_init__(self):
        if self.sidecar not in SIDECAR_KINDS:
            raise ValueError(f"unknown sidecar kind {self.sidecar!r} (choose from {', '.join(SIDECAR_KINDS)})")
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError("--workers and --batch-size must be at least 1")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_workers(workers: int, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads each) with workers x threads <= cores: oversubscribing only adds switching."""
    from edgecap.core.providers import default_threads

    cores = cores or usable_cores()
    if workers > cores:
        log.warning("%d workers asked for, %d cores usable: running %d", workers, cores, cores)
        workers = cores
    per_worker = threads or max(1, min(default_threads(), cores // workers))
    if per_worker * workers > cores:
        per_worker = max(1, cores // workers)
        log.warning("onnxruntime threads cut to %d per worker so that workers x threads <= %d cores",
                    per_worker, cores)
    return workers, per_worker


# --- describing: the one function both the local and the Ray path run ------------------
def describe_batch(captioner, items: list[tuple[str, bytes]], options: DescribeOptions,
                   read_text=None, done: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """One JSON-ready record per (path, file bytes).

    status is the captioner's (ok, dark, bright, uniform), "failed" with an `error` line, or
    "resumed" for a photo whose hash is in `done` (the caller already has its record). Photos
    are described one at a time: a worker holds one decoded photo, not a batch of them, and the
    words cannot depend on a photo's neighbours, which a cluster picks its own way (before the
    grounded captioner, the reranker shared one random stream across a batch).
    """
    records = []
    for path, data in items:
        sha = photo_hash(data)
        if sha in done:
            records.append({"path": path, "sha256": sha, "status": "resumed"})
            continue
        try:
            rgb = decode_photo(data, path, 4 * max(captioner.bundle.preprocessing.image_size))
            result = spoken_caption(captioner, rgb, options.decoding, read_text)
            record = {"path": path, "sha256": sha, "caption": result.caption, "status": result.status}
            fields = result.to_json() if hasattr(result, "to_json") else {}
            for name in RESULT_FIELDS:
                value = fields.get(name, getattr(result, name, None))
                if value is not None:
                    record[name] = _plain(value)
            if getattr(result, "text", None) is not None:
                record["text"] = result.text
            record["model"] = captioner.bundle.name
            record["ms"] = round(result.ms, 1)
        except ImageError as exc:
            record = {"path": path, "sha256": sha, "status": "failed", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad photo must not stop a library run
            log.debug("describing %s failed", path, exc_info=True)
            record = {"path": path, "sha256": sha, "status": "failed",
                      "error": f"{path}: describing failed ({type(exc).__name__}: {exc})"}
        records.append(record)
    return records


def spoken_caption(captioner, rgb: np.ndarray, decoding: DecodingOptions, read_text=None):
    """What `edgecap caption` says about one photo: the grounded decision (edgecap.caption), with its
    confidence, objects, faces and, with read_text, the text clause."""
    from edgecap.caption import describer_for

    return describer_for(captioner).describe([rgb], decoding, read_text)[0]


def _plain(value):
    """Dataclasses, numpy values and tuples as JSON-ready Python."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_text_reader(threads: int | None = 1):
    from edgecap.vision.read_aloud import caption_text_reader

    return caption_text_reader(threads)


class BatchDescriber:
    """One loaded model (and text reader) that describes batches: a worker process, or a Ray actor."""

    def __init__(self, options: DescribeOptions, done: frozenset[str] = frozenset()):
        from edgecap.core.model import OnnxCaptioner

        self.options = options
        self.done = done
        self.captioner = OnnxCaptioner.load(options.model, provider=options.provider, threads=options.threads)
        self.read_text = load_text_reader(options.threads) if options.read_text else None

    def describe(self, items: list[tuple[str, bytes]]) -> list[dict]:
        return describe_batch(self.captioner, items, self.options, self.read_text, self.done)

    def describe_files(self, paths: list[str]) -> list[dict]:
        items, unreadable = [], []
        for path in paths:
            try:
                items.append((path, Path(path).read_bytes()))
            except OSError as exc:
                unreadable.append({"path": path, "status": "failed",
                                   "error": f"{path}: cannot read ({exc.strerror or exc})"})
        return unreadable + self.describe(items)


# --- the JSON Lines file, sidecars and counts ---------------------------------------------
@dataclass
class Summary:
    described: int = 0  # this run
    resumed: int = 0  # already in the JSON Lines file (same bytes), not described again
    skipped: int = 0  # files that are not photos edgecap can read
    failed: int = 0
    confidence: Counter = field(default_factory=Counter)  # of every photo in the folder with a record
    worker_rss_mb: float = 0.0  # peak resident memory of one worker

    def line(self) -> str:
        parts = [f"{self.described} described", f"{self.resumed} already done", f"{self.skipped} skipped",
                 f"{self.failed} failed", f"{self.confidence['hedged']} hedged",
                 f"{self.confidence['unknown']} unknown"]
        rss = f"; peak worker RSS {self.worker_rss_mb:.0f} MB" if self.worker_rss_mb else ""
        return ", ".join(parts) + rss


class Library:
    """Appends records to the JSON Lines file (one writer), writes sidecars, keeps the summary."""

    def __init__(self, out: str | Path, sidecar: str = "none"):
        self.out = Path(out)
        self.sidecar = sidecar
        self.summary = Summary()
        self.by_hash: dict[str, dict] = {}
        self.paths: set[str] = set()
        if self.out.exists():
            self._load()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.out.exists() and self.out.stat().st_size:
            with open(self.out, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut_short = f.read(1) != b"\n"
        else:
            cut_short = False
        self._file = open(self.out, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if cut_short:
            self._file.write("\n")  # a kill mid-line left half a record: start clean after it

    def _load(self) -> None:
        with open(self.out, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if line.strip():
                        log.warning("%s:%d: not a whole record (an interrupted write?); ignored", self.out, number)
                    continue
                if record.get("status") not in (None, "failed") and "sha256" in record:
                    self.by_hash[record["sha256"]] = record
                    self.paths.add(record["path"])

    @property
    def done(self) -> frozenset[str]:
        return frozenset(self.by_hash)

    def add(self, record: dict) -> None:
        status = record["status"]
        if status == "failed":
            self.summary.failed += 1
            print(f"edgecap: error: {record['error']}", file=sys.stderr)
            self._append(record)
            return
        if status == "resumed":
            self.summary.resumed += 1
            record = self.by_hash[record["sha256"]] | {"path": record["path"]}
            if record["path"] not in self.paths:  # renamed or copied: same words, no new model run
                self._append(record)
        else:
            self.summary.described += 1
            self._append(record)
        self.by_hash[record["sha256"]] = record
        self.summary.confidence[record.get("confidence", "unrated")] += 1
        self._write_sidecar(record, fresh=status != "resumed")

    def _append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()  # a record on disk is a photo a re-run will not describe again
        self.paths.add(record["path"])

    def _write_sidecar(self, record: dict, fresh: bool) -> None:
        if self.sidecar == "none" or "://" in record["path"]:
            return
        if not fresh and sidecar_path(record["path"], self.sidecar).exists():
            return
        try:
            write_sidecar(record["path"], self.sidecar, record["caption"])
        except SidecarError as exc:
            self.summary.failed += 1
            print(f"edgecap: error: {exc}", file=sys.stderr)

    def close(self) -> None:
        self._file.close()


def show_progress(bar, summary: Summary, total: int) -> None:
    """Photos described (and failed) this run against those left to describe: resumed ones
    pass in an instant and would make the rate and the time left meaningless."""
    bar.total = max(total - summary.resumed, 1)
    bar.update(summary.described + summary.failed)


def end_progress(bar, summary: Summary) -> None:
    if bar.enabled and summary.described + summary.failed < bar.total:
        sys.stderr.write("\n")  # stopped part way: the next line starts clean


# --- one machine: worker processes ------------------------------------------------------
_describer: BatchDescriber | None = None


def _start_worker(options: DescribeOptions, done: frozenset[str]) -> None:
    global _describer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _describer = BatchDescriber(options, done)


def _work(paths: list[str]) -> tuple[list[dict], float]:
    records = _describer.describe_files(paths)
    return records, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe_library(root: str | Path, out: str | Path, options: DescribeOptions,
                     progress: bool | None = None) -> Summary:
    """Describe every photo under root that the JSON Lines file `out` has no record of."""
    photos, skipped = find_photos(root)
    for reason, count in sorted(skipped.items()):
        log.info("skipping %d file(s): %s", count, reason)
    workers, threads = plan_workers(min(options.workers, max(1, len(photos))), options.threads)
    options = replace(options, workers=workers, threads=threads)
    if options.read_text:
        load_text_reader()  # fail now, in one line, not once per photo
    library = Library(out, options.sidecar)
    library.summary.skipped = sum(skipped.values())
    bar = Progress(len(photos), "describe", progress)
    batches = [[str(p) for p in photos[i:i + options.batch_size]]
               for i in range(0, len(photos), options.batch_size)]
    try:
        for records, rss in _run_batches(batches, options, library.done):
            for record in records:
                library.add(record)
            library.summary.worker_rss_mb = max(library.summary.worker_rss_mb, rss)
            show_progress(bar, library.summary, len(photos))
    finally:
        end_progress(bar, library.summary)
        library.close()
    return library.summary


def _run_batches(batches, options: DescribeOptions, done: frozenset[str]):
    if options.workers == 1 or len(batches) <= 1:
        global _describer
        _describer = BatchDescriber(options, done)
        for batch in batches:
            yield _work(batch)
        return
    import multiprocessing

    # spawn: each worker starts clean instead of inheriting the parent's onnxruntime threads.
    with multiprocessing.get_context("spawn").Pool(options.workers, _start_worker, (options, done)) as pool:
        yield from pool.imap_unordered(_work, batches)
