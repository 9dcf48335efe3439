import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("pycocoevalcap")

from edgecap.evaluation.evaluate import METRIC_KEYS  # noqa: E402

REFS = {
    "chelsea": ["A ginger cat lies on a wooden floor.", "A cat looks at the camera."],
    "coffee": ["A cup of coffee on a saucer.", "A white cup with coffee on a wooden table."],
    "astronaut": ["An astronaut in an orange suit poses with a flag.", "A woman in a space suit smiles."],
    "rocket": ["A rocket launches into the sky.", "A rocket lifts off with a plume of smoke."],
}


@pytest.fixture()
def dataset(tmp_path, photo_paths):
    (tmp_path / "images").mkdir()
    rows = []
    for i, path in enumerate(photo_paths):
        shutil.copy(path, tmp_path / "images" / path.name)
        rows.append({"file": f"images/{path.name}", "captions": REFS[path.stem], "split": "val" if i else "train"})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_eval_writes_every_metric(tiny_bundle, dataset, tmp_path):
    out = tmp_path / "metrics.json"
    proc = subprocess.run([sys.executable, "-m", "edgecap", "eval", "--data", str(dataset), "--model", str(tiny_bundle),
                           "--split", "val", "--json", str(out), "--beams", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["n_images"] == 3  # the train record is left out
    assert "cider" in proc.stdout.splitlines()[0]


def test_eval_compares_variants_with_a_plot(tiny_bundle, dataset, tmp_path):
    plot, table = tmp_path / "plot.png", tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "-m", "edgecap", "eval", "--data", str(dataset),
                           "--variant", f"on={tiny_bundle}", "--variant", f"off={tiny_bundle}:off", "--plot", str(plot),
                           "--markdown", str(table), "--json", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "m.json").read_text())
    assert set(rows) == {"on", "off"} and rows["on"]["n_images"] == 4
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.read_text().count("\n") >= 3


def test_eval_rejects_missing_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgecap", "eval", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "captions.jsonl" in proc.stderr
