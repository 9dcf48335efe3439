"""`edgecap doctor` on this machine: its JSON report, and a non-zero exit when the bundle is bad."""
import json
import shutil
from pathlib import Path

import pytest

from edgecap.cli import main

REPO = Path(__file__).resolve().parents[1]
REAL_MODEL = REPO / "models" / "edgecap-base"
CHECKS = {"platform", "onnxruntime", "dependencies", "model bundle", "memory", "model runs", "cameras", "speech"}

pytestmark = pytest.mark.skipif(not (REAL_MODEL / "manifest.json").is_file(), reason="no shipped model")


def doctor(capsys, *args):
    code = main(["doctor", "--json", "--provider", "cpu", *args])
    return code, json.loads(capsys.readouterr().out)


def test_json_report_on_the_shipped_bundle(capsys):
    code, report = doctor(capsys)
    assert set(report) == {"ok", "edgecap", "checks"}
    by_name = {c["name"]: c for c in report["checks"]}
    assert set(by_name) == CHECKS
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix", "essential", "data"}
        assert check["status"] in ("pass", "warn", "fail")
        assert (check["fix"] is None) == (check["status"] == "pass")
    assert code == 0 and report["ok"] is True
    assert by_name["model bundle"]["status"] == "pass"
    runs = by_name["model runs"]["data"]
    assert runs["provider"] == "CPUExecutionProvider" and runs["tokens"] > 0
    assert by_name["onnxruntime"]["data"]["tries"] == ["CPUExecutionProvider"]
    assert by_name["speech"]["data"]["engine"] in ("pyttsx3", "espeak", "none")


def test_a_missing_bundle_fails_with_a_fix(capsys, tmp_path):
    code, report = doctor(capsys, "--model", str(tmp_path / "nowhere"))
    bundle = next(c for c in report["checks"] if c["name"] == "model bundle")
    assert code == 1 and report["ok"] is False
    assert bundle["status"] == "fail" and "does not exist" in bundle["detail"] and bundle["fix"]
    assert "model runs" not in {c["name"] for c in report["checks"]}


def test_a_tampered_model_file_fails(capsys, tmp_path):
    copy = tmp_path / "edgecap-base"
    shutil.copytree(REAL_MODEL, copy)
    data = bytearray((copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "decoder.onnx").write_bytes(bytes(data))
    code, report = doctor(capsys, "--model", str(copy))
    bundle = next(c for c in report["checks"] if c["name"] == "model bundle")
    assert code == 1 and bundle["status"] == "fail"
    assert "decoder.onnx" in bundle["detail"] and "sha256" in bundle["detail"]


def test_text_report_names_each_check(capsys):
    assert main(["doctor", "--provider", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PASS  model bundle" in out and out.strip().splitlines()[-1].startswith("edgecap doctor: ready")


def test_a_library_outside_its_tested_range_is_a_warning_naming_it(capsys, monkeypatch):
    from importlib import metadata

    import edgecap.doctor

    check = edgecap.doctor.check_dependencies()
    assert check.status == "pass", check.detail  # this machine runs the tested versions
    assert {"numpy", "onnxruntime", "opencv-python-headless", "rapidocr"} <= set(check.data["installed"])
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "4.10.0.84" if name == "opencv-python-headless" else real(name))
    check = edgecap.doctor.check_dependencies()
    assert check.status == "warn" and check.fix
    assert check.data["outside"] == ["opencv-python-headless 4.10.0.84 (tested <6,>=5.0)"]


def test_without_installed_metadata_the_ranges_come_from_pyproject(monkeypatch):
    from importlib import metadata

    import edgecap.doctor

    installed = edgecap.doctor._declared_requirements()

    def no_edgecap(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", no_edgecap)
    from_pyproject = edgecap.doctor._declared_requirements()
    assert "rapidocr==3.10.0" in from_pyproject

    def ranges(requirements):
        from packaging.requirements import Requirement

        return {(r.name, r.specifier) for r in map(Requirement, requirements) if r.marker is None}

    assert ranges(from_pyproject) == ranges(installed) and len(ranges(installed)) >= 7
    assert edgecap.doctor.check_dependencies().status == "pass"
