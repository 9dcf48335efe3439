"""Tamper with model bundles and check that `edgecap caption` refuses every one with one line.

    python bench/tamper.py                  # ~60 cases, a few minutes
    python bench/tamper.py --json tamper.json

The shipped bundle is tampered with inside a scratch copy of the installed package (so its
pinned digest applies, as on a user's device); user bundles (`--model DIR`) are tampered
with the manifest and bundle.sha256 recomputed, as a careful attacker would. A case passes
when the command exits non-zero with exactly one line on stderr and no caption. Two control
cases must still caption exactly as the pristine bundle: a weight file planted in the
working directory, and a bundle whose weights live in an external data file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLE = "edgecap-base"
PHOTO = REPO / "assets" / "coffee.jpg"


# --- manifest edits ----------------------------------------------------------------------------
def nest(m):
    m["provenance"] = "DEEP"


MANIFEST_EDITS: dict[str, Callable] = {
    "calibration alpha": lambda m: m["calibration"].update(alpha=3.0),
    "preprocessing mean": lambda m: m["preprocessing"].update(mean=[0.0, 0.0, 0.0]),
    "token ids": lambda m: m["tokens"].update(eos_id=5),
    "memory left out of files": lambda m: m["files"].pop("memory"),
    "memory left out entirely": lambda m: (m["files"].pop("memory"), m["sha256"].pop("memory.npz")),
    "image_size 0x0": lambda m: m["preprocessing"].update(image_size=[0, 0]),
    "image_size 12000x12000": lambda m: m["preprocessing"].update(image_size=[12000, 12000]),
    "sha256 missing": lambda m: m.pop("sha256"),
    "sha256 a list": lambda m: m.update(sha256=list(m["sha256"])),
    "sha256 of a file missing": lambda m: m["sha256"].pop("encoder.onnx"),
    "format_version a string": lambda m: m.update(format_version="1"),
    "deeply nested": nest,
    "architecture n_layers huge": lambda m: m["architecture"].update(n_layers=10**9),
    "vocab_size a float": lambda m: m["architecture"].update(vocab_size=2851.5),
    "prompt_ids out of range": lambda m: m["tokens"].update(prompt_ids=[99999]),
    "std zero": lambda m: m["preprocessing"].update(std=[0, 0, 0]),
    "memory neighbours negative": lambda m: m["memory"].update(neighbours=-1),
    "file path leaves the bundle": lambda m: m["files"].update(tokenizer="../tokenizer.json"),
    "absolute file path": lambda m: m["files"].update(tokenizer="/etc/passwd"),
}


# Valid values: an attack on the shipped bundle, but a user's own choice in a bundle of their own
# (whose digest `edgecap info` prints).
LEGITIMATE_FOR_A_USER_BUNDLE = {"calibration alpha", "preprocessing mean", "token ids", "memory left out of files"}


def write_manifest_text(root: Path, text: str, update_digest: bool) -> None:
    raw = text.encode()
    (root / "manifest.json").write_bytes(raw)
    if update_digest:
        (root / "bundle.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")


def edit_manifest(edit: Callable, update_digest: bool) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text())
        edit(manifest)
        text = json.dumps(manifest, indent=2)
        text = text.replace('"DEEP"', "[" * 5000 + "]" * 5000)
        write_manifest_text(root, text, update_digest)
    return apply


def raw_manifest(text: str, update_digest: bool) -> Callable[[Path], None]:
    return lambda root: write_manifest_text(root, text, update_digest)


# --- member edits ------------------------------------------------------------------------------
def flip(name: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = bytearray((root / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (root / name).write_bytes(bytes(data))
    return apply


def truncate(name: str, size: int) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with open(root / name, "r+b") as f:
            f.truncate(size)
    return apply


def replace_with(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def remove(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def symlink(name: str, target: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / name).unlink()
        os.symlink(target, root / name)
    return apply


def fifo(name: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / name).unlink()
        os.mkfifo(root / name)
    return apply


def npz_bomb(root: Path) -> None:
    with zipfile.ZipFile(root / "memory.npz", "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("keys.npy", "w", force_zip64=True) as f:
        for _ in range(1200):  # 1.2 GB of zeros in about a megabyte
            f.write(bytes(1 << 20))


def npz_nan(root: Path) -> None:
    with np.load(root / "memory.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["basis"][3, 3] = np.nan
    np.savez_compressed(root / "memory.npz", **arrays)


def tokenizer_fewer_tokens(root: Path) -> None:
    tok = json.loads((root / "tokenizer.json").read_text())
    tok["model"]["vocab"] = dict(list(tok["model"]["vocab"].items())[:500])
    (root / "tokenizer.json").write_text(json.dumps(tok))


def tokenizer_all_special(root: Path) -> None:
    tok = json.loads((root / "tokenizer.json").read_text())
    tok["added_tokens"] = [{"id": i, "content": w, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True} for w, i in tok["model"]["vocab"].items()]
    (root / "tokenizer.json").write_text(json.dumps(tok))


def rehash(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """A user bundle edited with its hashes and digest recomputed."""
    def apply(root: Path) -> None:
        change(root)
        manifest = json.loads((root / "manifest.json").read_text())
        manifest.pop("sha256", None)
        from edgecap.core.bundle import write_manifest
        write_manifest(root, manifest)
    return apply


def cases() -> list[tuple[str, str, Callable[[Path], None]]]:
    """(name, where: shipped | user, tamper)."""
    out = []
    for name, edit in MANIFEST_EDITS.items():
        out.append((f"manifest: {name}", "shipped", edit_manifest(edit, update_digest=False)))
        out.append((f"manifest: {name}, digest recomputed", "shipped", edit_manifest(edit, update_digest=True)))
        if name not in LEGITIMATE_FOR_A_USER_BUNDLE:
            out.append((f"manifest: {name}, user bundle", "user", edit_manifest(edit, update_digest=True)))
    for text, label in (("{not json", "invalid JSON"), ("[]", "a list"), ("", "empty"), ("\xff\xfe", "not UTF-8"),
                        ('{"format": "edgecap-bundle", "pad": "' + "x" * (3 << 20) + '"}', "3 MB")):
        out.append((f"manifest {label}", "shipped", raw_manifest(text, update_digest=True)))
    out += [
        ("manifest deleted", "shipped", remove("manifest.json")),
        ("bundle.sha256 deleted", "shipped", remove("bundle.sha256")),
        ("bundle.sha256 garbage", "shipped", replace_with("bundle.sha256", b"0" * 64)),
        ("decoder.onnx flipped byte", "shipped", flip("decoder.onnx")),
        ("encoder.onnx truncated", "shipped", truncate("encoder.onnx", 1000)),
        ("encoder.onnx deleted", "shipped", remove("encoder.onnx")),
        ("encoder.onnx -> decoder.onnx", "shipped", lambda r: shutil.copyfile(r / "decoder.onnx", r / "encoder.onnx")),
        ("encoder.onnx a symlink to /dev/zero", "shipped", symlink("encoder.onnx", "/dev/zero")),
        ("tokenizer.json a FIFO", "shipped", fifo("tokenizer.json")),
        ("tokenizer.json {}", "shipped", replace_with("tokenizer.json", b"{}")),
        ("tokenizer.json 3 GiB", "shipped", truncate("tokenizer.json", 3 << 30)),
        ("memory.npz deleted", "shipped", remove("memory.npz")),
        ("memory.npz bomb", "shipped", npz_bomb),
        ("unlisted file planted", "shipped", replace_with("encoder.data", bytes(1 << 20))),
        ("tokenizer.json {}, rehashed", "user", rehash(replace_with("tokenizer.json", b"{}"))),
        ("tokenizer with 500 tokens, rehashed", "user", rehash(tokenizer_fewer_tokens)),
        ("tokenizer all special, rehashed", "user", rehash(tokenizer_all_special)),
        ("memory.npz bomb, rehashed", "user", rehash(npz_bomb)),
        ("memory.npz NaN, rehashed", "user", rehash(npz_nan)),
        ("encoder.onnx junk, rehashed", "user", rehash(replace_with("encoder.onnx", b"\x08\x07" * 500))),
        ("memory.npz not a zip, rehashed", "user", rehash(replace_with("memory.npz", b"PK junk"))),
    ]
    return out


def external_data(root: Path) -> None:
    import onnx

    model = onnx.load(str(root / "encoder.onnx"))
    onnx.save_model(model, str(root / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="encoder.data", size_threshold=256)


def run(install: Path, model: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgecap", "caption", str(PHOTO)] + (["--model", str(model)] if model else [])
    env = dict(os.environ, PYTHONPATH=str(install))
    env.pop("EDGECAP_MODEL", None)
    return subprocess.run(cmd, capture_output=True, cwd=cwd, env=env, timeout=300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--only", help="run the cases whose name contains this")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgecap-tamper-") as tmp:
        tmp = Path(tmp)
        install = tmp / "install"  # a scratch install: package + shipped model, as on a device
        shutil.copytree(REPO / "edgecap", install / "edgecap", ignore=shutil.ignore_patterns("__pycache__"))
        pristine = REPO / "models" / BUNDLE
        shipped = install / "models" / BUNDLE
        shutil.copytree(pristine, shipped)
        baseline = run(install, None, tmp)
        expected = baseline.stdout.decode().strip()
        assert baseline.returncode == 0 and expected, baseline.stderr.decode()
        results = []
        for name, where, tamper in cases():
            if args.only and args.only not in name:
                continue
            target = shipped if where == "shipped" else tmp / "user" / BUNDLE
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(pristine, target)
            tamper(target)
            proc = run(install, None if where == "shipped" else target, tmp)
            err = proc.stderr.decode(errors="replace").strip()
            lines = err.splitlines()
            ok = (proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("edgecap: error: ")
                  and not proc.stdout.strip())
            results.append({"case": name, "where": where, "refused_one_line": ok, "rc": proc.returncode,
                            "traceback": "Traceback" in err, "stderr": err[-600:],
                            "stdout": proc.stdout.decode(errors="replace")[-200:]})
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {lines[-1] if lines else proc.stdout.decode().strip()}",
                  flush=True)
        shutil.rmtree(shipped)
        shutil.copytree(pristine, shipped)
        controls = []
        (tmp / "encoder.data").write_bytes(bytes(8 << 20))  # planted in the working directory
        controls.append(("weights planted in the working directory", run(install, None, tmp)))
        try:
            user = tmp / "user" / BUNDLE
            shutil.rmtree(user, ignore_errors=True)
            shutil.copytree(pristine, user)
            rehash(external_data)(user)
            controls.append(("external data file, run from elsewhere", run(install, user, tmp)))
        except ImportError:
            print("onnx is not installed: external-data control case skipped")
        for name, proc in controls:
            same = proc.returncode == 0 and proc.stdout.decode().strip() == expected
            results.append({"case": name, "control": True, "same_caption": same,
                            "stdout": proc.stdout.decode(errors="replace")[-200:],
                            "stderr": proc.stderr.decode(errors="replace")[-600:]})
            print(f"{'ok  ' if same else 'FAIL'} control: {name}: {proc.stdout.decode().strip()}")
    tampered = [r for r in results if not r.get("control")]
    report = {"tampered_cases": len(tampered),
              "refused_with_one_line": sum(r["refused_one_line"] for r in tampered),
              "tracebacks": sum(r["traceback"] for r in tampered),
              "accepted": [r["case"] for r in tampered if not r["refused_one_line"]],
              "controls_same_caption": f"{sum(r['same_caption'] for r in results if r.get('control'))}/"
                                       f"{sum(1 for r in results if r.get('control'))}",
              "pristine_caption": expected}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**report, "results": results}, indent=2))
    met = not report["accepted"] and not report["tracebacks"] and all(
        r["same_caption"] for r in results if r.get("control"))
    print("targets met" if met else "targets MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
