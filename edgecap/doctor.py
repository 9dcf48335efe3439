"""`edgecap doctor`: can this machine describe pictures aloud, and if not, what to fix.

One line per check: PASS, WARN or FAIL, what was found, and a fix for anything not passing.
FAIL is kept for what makes captioning impossible (onnxruntime, the model bundle, running it,
memory); a missing camera or voice is a WARN because `edgecap caption` still works without.
The exit status is 1 when an essential check fails.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, WARN, FAIL = "pass", "warn", "fail"
# Features onnxruntime's CPU kernels use when present (x86 flags / ARM "Features").
CPU_FEATURES = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile",
                "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
# Peak memory of `edgecap caption` on one photo, measured with /usr/bin/time -v on x86-64:
# 162 MB, of which 66 MB is importing numpy, onnxruntime, OpenCV and tokenizers and the
# rest grows with the model files (12.9 MB for edgecap-base). Rounded up.
BASE_MB, PER_MODEL_MB = 80, 8


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    fix: str | None = None
    essential: bool = False
    data: dict = field(default_factory=dict)


def _run(argv: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a helper program, or None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return info


def check_platform() -> Check:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    features = [f for f in CPU_FEATURES if f in flags]
    board = None
    try:
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        pass
    cpu = info.get("model name") or info.get("model") or platform.processor() or "unknown CPU"
    cores = os.cpu_count() or 1
    from edgecap.core.providers import default_threads

    data = {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu": cpu, "board": board, "cores": cores, "cpu_features": features, "threads": default_threads()}
    detail = (f"{platform.system()} {platform.machine()}{' (' + board + ')' if board else ''}, Python "
              f"{platform.python_version()}, {cores} cores ({cpu}), onnxruntime threads {default_threads()}; "
              f"features: {' '.join(features) or 'none found'}")
    arm = platform.machine() in ("aarch64", "arm64")
    if arm and "flags" in info:  # x86 flags under an ARM Python: qemu-user shows the host's cpuinfo
        data["emulated"] = True
        return Check("platform", PASS, detail + " (/proc/cpuinfo describes an x86 host: running emulated)",
                     data=data)
    if arm and flags and "asimd" not in flags:
        return Check("platform", WARN, detail, "this ARM CPU reports no NEON (asimd): captioning will be slow",
                     data=data)
    return Check("platform", PASS, detail, data=data)


def check_onnxruntime(provider: str) -> tuple[Check, list[str]]:
    try:
        import onnxruntime as ort

        from edgecap.core.providers import ProviderError, resolve_providers
    except Exception as exc:  # noqa: BLE001 - a broken install is exactly what doctor reports
        return Check("onnxruntime", FAIL, f"cannot import onnxruntime: {exc}",
                     "reinstall edgecap (pip install onnxruntime, or apt-get install --reinstall edgecap)",
                     essential=True), []
    available = ort.get_available_providers()
    data = {"version": ort.__version__, "available": available, "requested": provider}
    try:
        chain = resolve_providers(provider)
    except ProviderError as exc:
        return Check("onnxruntime", FAIL, str(exc), "use --provider auto, or install the onnxruntime build "
                     "for that accelerator", essential=True, data=data), []
    data["tries"] = chain
    short = [p.replace("ExecutionProvider", "") for p in chain]
    detail = f"{ort.__version__}; available: {', '.join(available)}; {provider} tries {' > '.join(short)}"
    return Check("onnxruntime", PASS, detail, essential=True, data=data), chain


def check_dependencies() -> Check:
    """The installed run-time libraries against the ranges edgecap declares and is tested on
    (pyproject.toml); outside them it may run yet misbehave (the comments there say how)."""
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
        declared = [Requirement(r) for r in _declared_requirements()]
    except Exception as exc:  # noqa: BLE001 - neither metadata nor pyproject.toml, or no packaging
        return Check("dependencies", WARN, f"cannot read edgecap's declared dependencies ({exc})",
                     "install edgecap with pip, or keep pyproject.toml beside the edgecap folder")
    outside, versions = [], {}
    for req in declared:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra
        try:
            versions[req.name] = installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if req.name.startswith("onnxruntime"):  # an accelerator build (onnxruntime-gpu ...) provides it
                installed = _onnxruntime_version()
                versions[req.name] = installed
            else:
                installed = None
        if installed is None or not req.specifier.contains(installed, prereleases=True):
            outside.append(f"{req.name} {installed or 'missing'} (tested {req.specifier})")
    data = {"installed": versions, "outside": outside}
    if outside:
        return Check("dependencies", WARN, "outside the tested range: " + "; ".join(outside),
                     "install the versions pyproject.toml declares; outside them edgecap is untested", data=data)
    return Check("dependencies", PASS, f"{len(versions)} run-time libraries in their tested ranges", data=data)


def _declared_requirements() -> list[str]:
    """From the installed metadata, else from the pyproject.toml beside the package (the .deb and
    the Jetson image put the package on the path with a .pth file, without metadata)."""
    from importlib import metadata

    try:
        return metadata.requires("edgecap") or []
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except Exception:  # noqa: BLE001
        return None


def check_bundle(model: Path | None):
    """(Check, Bundle or None): the manifest, and every listed file against its sha256."""
    from edgecap.core.bundle import BundleError, load_bundle
    from edgecap.core.model import default_model_dir

    path = Path(model) if model else default_model_dir()
    fix = ("re-install the model (apt-get install --reinstall edgecap, or a fresh checkout), or point "
           "--model / EDGECAP_MODEL at a complete bundle")
    try:
        bundle = load_bundle(path, verify=True)
        for role in bundle.files:
            bundle.read_verified(role)
    except BundleError as exc:
        return Check("model bundle", FAIL, str(exc), fix, essential=True, data={"path": str(path)}), None
    except OSError as exc:
        return Check("model bundle", FAIL, f"{path}: {exc}", fix, essential=True, data={"path": str(path)}), None
    size = sum((path / rel).stat().st_size for rel in bundle.files.values())
    data = {"path": str(path), "name": bundle.name, "files": len(bundle.manifest.get("sha256", {})),
            "model_mb": round(size / 2**20, 1)}
    return Check("model bundle", PASS, f"{bundle.name} at {path}: {data['files']} files match their sha256",
                 essential=True, data=data), bundle


def available_memory_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(bundle) -> Check:
    model_mb = sum((bundle.path / rel).stat().st_size for rel in bundle.files.values()) / 2**20
    need = BASE_MB + PER_MODEL_MB * model_mb
    free = available_memory_mb()
    data = {"need_mb": round(need), "available_mb": None if free is None else round(free)}
    if free is None:
        return Check("memory", WARN, f"needs about {need:.0f} MB; free memory unknown on this system", data=data)
    detail = f"{free:.0f} MB available, edgecap needs about {need:.0f} MB"
    if free < need:
        return Check("memory", FAIL, detail, "close other programs, or add swap (Pi: CONF_SWAPSIZE in "
                     "/etc/dphys-swapfile)", essential=True, data=data)
    if free < 2 * need:
        return Check("memory", WARN, detail + " (little to spare)", "close other programs", essential=True,
                     data=data)
    return Check("memory", PASS, detail, essential=True, data=data)


def _test_picture():
    """A picture with structure (not a flat surface), made here so doctor needs no photo."""
    import numpy as np

    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([(x * 255 // 320), (y * 255 // 240), ((x // 40 + y // 40) % 2) * 200 + 30], axis=-1)
    return rgb.astype(np.uint8)


def check_model_runs(bundle, chain: list[str], provider: str, threads: int | None) -> Check:
    """Load both sessions the way `auto` would and decode once: the provider actually used."""
    import resource

    from edgecap.core.bundle import BundleError
    from edgecap.core.decoding import preset
    from edgecap.core.model import OnnxCaptioner
    from edgecap.core.providers import ProviderError, captioner_fallback

    fix = "run `edgecap doctor --provider cpu`; if that passes, the accelerator's drivers are the problem"
    try:
        start = time.perf_counter()
        captioner = OnnxCaptioner(bundle, provider=provider, threads=threads)
        loaded = time.perf_counter()
        features = captioner.encode([_test_picture()])
        result = captioner.caption_features(features, preset("brief", beam_size=1, rerank=False))[0]
        ran = time.perf_counter()
    except (BundleError, ProviderError, RuntimeError, ValueError, MemoryError) as exc:
        return Check("model runs", FAIL, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                     fix, essential=True), None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
    used = captioner.provider
    fallback = captioner_fallback(captioner)
    data = {"provider": used, "asked": chain[0] if chain else None, "fallback": fallback,
            "load_s": round(loaded - start, 2), "first_caption_s": round(ran - loaded, 2),
            "tokens": len(result.tokens), "peak_rss_mb": round(peak)}
    detail = (f"runs on {used}: loaded in {data['load_s']} s, a first caption of a test pattern in "
              f"{data['first_caption_s']} s; peak memory {data['peak_rss_mb']} MB")
    if not result.tokens:
        return Check("model runs", FAIL, detail + "; the decoder produced no words", fix, essential=True, data=data)
    if fallback:
        return Check("model runs", WARN, f"{detail}; {fallback}", fix, essential=True, data=data)
    return Check("model runs", PASS, detail, essential=True, data=data)


def list_cameras() -> dict[str, list[str]]:
    v4l2 = []
    for node in sorted(Path("/sys/class/video4linux").glob("video*"), key=lambda p: int(p.name[5:] or 0)):
        try:
            name = (node / "name").read_text(errors="replace").strip()
        except OSError:
            name = "?"
        v4l2.append(f"/dev/{node.name} ({name})")
    libcamera = []
    for tool in ("rpicam-hello", "libcamera-hello"):
        out = _run([tool, "--list-cameras"], timeout=8)
        if out is not None:
            libcamera = [line.strip() for line in out.splitlines() if re.match(r"\s*\d+ : ", line)]
            break
    return {"v4l2": v4l2, "libcamera": libcamera}


def check_cameras() -> Check:
    found = list_cameras()
    detail = (f"V4L2: {', '.join(found['v4l2']) or 'none'}; libcamera: "
              f"{'; '.join(found['libcamera']) or 'none (or no rpicam-hello to ask)'}")
    if not found["v4l2"] and not found["libcamera"]:
        return Check("cameras", WARN, detail, "plug in a USB camera (or enable the CSI camera), and check that "
                     "the user is in the 'video' group; `edgecap caption` on photos still works", data=found)
    if found["libcamera"] and not any("uvc" in d.lower() or "usb" in d.lower() for d in found["v4l2"]):
        return Check("cameras", PASS, detail + "; a CSI camera is read through libcamera: run narration under "
                     "`libcamerify` (package libcamera-v4l2)", data=found)
    return Check("cameras", PASS, detail, data=found)


def check_speech(engine: str = "auto") -> Check:
    from edgecap.audio.speech_output import check_output

    fix = ("apt-get install espeak-ng; connect headphones or a speaker; a service user must be in the "
           "'audio' group")
    result = check_output(engine)
    data = {"engine": result.engine, "ok": result.ok}
    return Check("speech", PASS if result.ok else WARN, f"{result.engine}: {result.reason}", None if result.ok else fix,
                 data=data)


def run_checks(model: Path | None = None, provider: str = "auto", threads: int | None = None,
               speech: str = "auto") -> list[Check]:
    checks = [check_platform()]
    ort_check, chain = check_onnxruntime(provider)
    checks += [ort_check, check_dependencies()]
    bundle_check, bundle = check_bundle(model)
    checks.append(bundle_check)
    if bundle is not None:
        checks.append(check_memory(bundle))
        if ort_check.status != FAIL:
            checks.append(check_model_runs(bundle, chain, provider, threads))
    checks.append(check_cameras())
    checks.append(check_speech(speech))
    return checks


def report(checks: list[Check], as_json: bool) -> int:
    from edgecap import __version__

    failed = [c for c in checks if c.status == FAIL and c.essential]
    if as_json:
        print(json.dumps({"ok": not failed, "edgecap": __version__, "checks": [asdict(c) for c in checks]},
                         indent=2))
    else:
        for c in checks:
            print(f"{c.status.upper():4}  {c.name:13} {c.detail}")
            if c.fix:
                print(f"{'':19} fix: {c.fix}")
        warnings = sum(c.status == WARN for c in checks)
        verdict = (f"FAILED: {', '.join(c.name for c in failed)}" if failed
                   else "ready to describe pictures" + (f" ({warnings} warning{'s' * (warnings > 1)})" if warnings else ""))
        print(f"edgecap doctor: {verdict}")
    return 1 if failed else 0


def cmd_doctor(args) -> int:
    return report(run_checks(args.model, args.provider, args.threads, args.speech), args.json)


def register_cli(subparsers) -> None:
    from edgecap.cli_args import add_model_args

    p = subparsers.add_parser("doctor", help="check this machine: accelerator, model, camera, voice, memory",
                              description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--speech", default="auto", help="speech engine to check: auto, pyttsx3 or espeak")
    add_model_args(p)
    p.set_defaults(func=cmd_doctor)

