"""The library job on a Ray cluster: `edgecap describe DIR --ray [ADDRESS]` (pip install 'edgecap[ray]').

Ray Data reads the files (`read_binary_files`) and streams batches to a pool of actors,
each holding one loaded model (`map_batches(RayDescriber, concurrency=..., batch_size=...)`).
An actor runs `edgecap.library.describe.describe_batch`, the very function the worker processes run,
so the same photo gets the same record on either path; the driver hands the records to the
same `Library` (JSON Lines, sidecars, resume by content hash). Ray does the scheduling,
retries and spreading over machines; nothing here schedules work itself.
"""
from __future__ import annotations

import json
import logging
import resource
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecap.library.describe import (BatchDescriber, DescribeOptions, Library, Summary, end_progress, load_text_reader,
                              show_progress)
from edgecap.library.library_photos import HEIF_SUFFIXES, PHOTO_SUFFIXES, find_photos
from edgecap.progress import Progress

log = logging.getLogger("edgecap")


class RayDescriber:
    """A Ray actor: one model, loaded once, describing the batches Ray Data sends it."""

    def __init__(self, options: DescribeOptions, done: frozenset[str] = frozenset()):
        self.describer = BatchDescriber(options, done)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [(str(path), bytes(data)) for path, data in zip(batch["path"], batch["bytes"])]
        records = self.describer.describe(items)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "path": np.array([r["path"] for r in records], dtype=object),
            "sha256": np.array([r.get("sha256", "") for r in records], dtype=object),
            "status": np.array([r["status"] for r in records], dtype=object),
            "caption": np.array([r.get("caption", "") for r in records], dtype=object),
            "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object),
            "rss_mb": np.full(len(records), rss_mb),
        }


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` ('auto': the one this machine belongs to), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address and address != "local":
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def describe_on_ray(source: str | Path, out: str | Path, options: DescribeOptions, concurrency: int = 2,
                    batch_size: int = 8, address: str | None = None, parquet: str | None = None,
                    progress: bool | None = None) -> Summary:
    """Describe every photo under `source` (a folder, or a URI the cluster can read, e.g. s3://bucket/photos)."""
    try:
        import ray
    except ImportError:
        raise ValueError("the Ray path needs Ray: pip install 'edgecap[ray]'") from None
    if options.read_text:
        load_text_reader()
    options = replace(options, threads=options.threads or 1, workers=concurrency)
    library = Library(out, options.sidecar)
    if "://" in str(source):
        paths, total = str(source), None
        suffixes = sorted(s.lstrip(".") for s in PHOTO_SUFFIXES | HEIF_SUFFIXES)
    else:
        photos, skipped = find_photos(source)
        library.summary.skipped = sum(skipped.values())
        paths, total, suffixes = [str(p.resolve()) for p in photos], len(photos), None
    if not paths:
        library.close()
        return library.summary
    start_ray(address, num_cpus=None if address else concurrency * options.threads)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Reading is I/O: at 0 CPUs it never waits behind the actors that hold every core (with
    # ray.init(num_cpus=2) and 2 actors it deadlocked), and a few read tasks at a time are plenty
    # (unbounded, Ray started a worker process per pending read: 16 on 2 cores).
    reads = max(1, concurrency // 4)
    described = (ray.data.read_binary_files(paths, include_paths=True, file_extensions=suffixes, num_cpus=0,
                                            concurrency=reads)
                 .map_batches(RayDescriber, fn_constructor_kwargs={"options": options, "done": library.done},
                              compute=ray.data.ActorPoolStrategy(size=concurrency), batch_size=batch_size,
                              num_cpus=options.threads, batch_format="numpy"))
    if parquet:
        described = described.materialize()  # describe once, then write both outputs
        described.drop_columns(["rss_mb"]).write_parquet(parquet)
    bar = Progress(total or 0, "describe", False if total is None else progress)
    try:
        for batch in described.iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["record"]:
                library.add(json.loads(text))
            library.summary.worker_rss_mb = max(library.summary.worker_rss_mb, float(batch["rss_mb"].max()))
            show_progress(bar, library.summary, total or 0)
    finally:
        end_progress(bar, library.summary)
        library.close()
    return library.summary
