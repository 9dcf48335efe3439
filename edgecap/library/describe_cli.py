"""The `edgecap describe` command: a photo library described here (edgecap.library.describe) or on Ray
(edgecap.library.distributed)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from edgecap.cli_args import add_decoding_args, add_model_args, decoding_options
from edgecap.library.describe import DescribeOptions, describe_library
from edgecap.library.distributed import describe_on_ray
from edgecap.library.sidecars import SIDECAR_KINDS


def cmd_describe(args) -> int:
    decoding = decoding_options(args)
    options = DescribeOptions(model=args.model, provider=args.provider, threads=args.threads, decoding=decoding,
                              read_text=args.read_text, sidecar=args.sidecar, workers=args.workers,
                              batch_size=args.batch_size)
    out = args.out
    if (args.parquet or args.ray_address) and not args.ray:
        raise ValueError("--parquet and --ray-address go with --ray")
    start = time.perf_counter()
    try:
        if args.ray:
            summary = describe_on_ray(args.folder, out, options, concurrency=args.workers, batch_size=args.batch_size,
                                      address=args.ray_address, parquet=args.parquet,
                                      progress=False if args.quiet else None)
        else:
            summary = describe_library(args.folder, out, options, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"edgecap: stopped; what is in {out} is kept, run the same command again to go on",
              file=sys.stderr)
        return 130
    print(f"edgecap: {summary.line()} in {time.perf_counter() - start:.1f} s -> {out}", file=sys.stderr)
    return 1 if summary.failed else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("describe", help="write alt text for every photo in a folder (resumable)",
                              description="Describe every photo under a folder once; re-run to resume.")
    p.add_argument("folder", help="a folder of photos (with --ray also a URI the cluster reads, e.g. s3://...)")
    p.add_argument("--out", type=Path, default=Path("descriptions.jsonl"),
                   help="JSON Lines file, one record per photo; re-runs append to it (default: descriptions.jsonl)")
    p.add_argument("--sidecar", choices=SIDECAR_KINDS, default="none",
                   help="also write PHOTO.xmp (dc:description, shown by digiKam, darktable, exiftool) or PHOTO.txt")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default 1; at most the cores); with --ray: model actors")
    p.add_argument("--batch-size", type=int, default=DescribeOptions.batch_size, help="photos per worker task")
    p.add_argument("--read-text", action="store_true", help="also read the text in each photo")
    p.add_argument("--quiet", action="store_true", help="no progress line (with a screen reader: only the summary)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (pip install 'edgecap[ray]')")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --ray: the cluster ('auto', 'ray://head:10001'); default: start a local Ray")
    p.add_argument("--parquet", metavar="DIR", help="with --ray: also write the records as Parquet files here")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=cmd_describe)
