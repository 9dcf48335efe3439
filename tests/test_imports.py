"""The import graph of edgecap/ and export/ has no cycle, and the run time never imports the build time."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_import_cycles_and_edgecap_never_imports_export():
    proc = subprocess.run([sys.executable, "bench/imports.py"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    # the graph is really read: the CLI is seen to import its sub-commands, export to import edgecap
    assert "edgecap.cli -> " in proc.stdout and "edgecap.narration.narrate_cli" in proc.stdout.split("edgecap.cli -> ")[1]
    assert "export.bundle -> " in proc.stdout and "edgecap.core.bundle" in proc.stdout.split("export.bundle -> ")[1]
    assert ", 0 cycles, 0 edgecap -> export imports" in proc.stdout
