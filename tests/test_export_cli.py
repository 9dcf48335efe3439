"""`python -m export`: one CLI, one error convention (one line naming the file, exit 2)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"python -m export {command}: error: "), err
    return err


@pytest.mark.parametrize("command", [["sweep", "--checkpoint"], ["bundle", "--out", "{tmp}/b", "--checkpoint"],
                                     ["finetune", "--out", "{tmp}/f.pt", "--checkpoint"]])
def test_a_missing_checkpoint_is_one_line_naming_it(command, tmp_path, capsys):
    missing = tmp_path / "absent.pt"
    argv = [a.format(tmp=tmp_path) for a in command] + [str(missing)]
    if command[0] == "sweep":
        argv += ["--out", str(tmp_path / "s.json")]
    assert main(argv) == 2
    assert str(missing) in one_error_line(capsys, command[0])


def test_missing_data_and_a_folder_that_is_no_bundle(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "t.pt")]) == 2
    assert str(tmp_path / "captioned" / "captions.jsonl") in one_error_line(capsys, "train")
    assert main(["train", "--recipe", "huge", "--data", str(tmp_path), "--out", str(tmp_path / "t.pt")]) == 2
    assert "unknown recipe 'huge'" in one_error_line(capsys, "train")
    assert main(["refresh", str(tmp_path)]) == 2
    assert str(tmp_path) in one_error_line(capsys, "refresh")
    assert not (tmp_path / "manifest.json").exists()


def test_the_older_refresh_spelling_runs_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "export.bundle", "refresh", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"python -m export refresh: error: {tmp_path / 'manifest.json'}: not found"


def test_a_bad_calibration_override_is_refused_before_any_export(tmp_path, capsys, monkeypatch):
    import export.pipeline

    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"not read: the override is checked first")
    monkeypatch.setattr(export.pipeline, "bundle_checkpoint", lambda *a, **k: pytest.fail("export started"))
    assert main(["bundle", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b"), "--calibration", "alpha=x"]) == 2
    assert one_error_line(capsys, "bundle").startswith("python -m export bundle: error: --calibration: ")
