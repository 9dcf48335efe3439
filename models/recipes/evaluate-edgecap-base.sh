#!/usr/bin/env bash
# The model card's evaluation of models/edgecap-base on the val split (run from the repo root
# after edgecap-base.sh). Writes models/edgecap-base/eval/: metrics.json, table.md, variants.png.
# Variants: the shipped int8 model (the fine-tuned, calibrated student, reranking with its
# memory) with SPARC on and off and without reranking; the same student in fp32, the student
# before fine-tuning, and the teacher in int8 and fp32 (these have no memory: beam captions).
# Decoding is the default "brief" preset (beam 3) for every variant.
set -euo pipefail
runs=${RUNS:-runs}
data=${DATA:-../shared/data}
model=${MODEL:-models/edgecap-base}
out="$model/eval"
mkdir -p "$out"
edgecap eval --data "$data/captioned" --split val --progress \
  --variant "shipped-int8=$model" --variant "shipped-int8-sparc-off=$model:off" \
  --variant "shipped-int8-no-rerank=$model:norerank" \
  --variant "shipped-fp32=$runs/student-fp32" --variant "distilled-int8=$runs/student-distilled-int8" \
  --variant "teacher-int8=$runs/teacher-int8" --variant "teacher-fp32=$runs/teacher-fp32" \
  --json "$out/metrics.json" --markdown "$out/table.md" --plot "$out/variants.png" \
  --predictions "$runs/val-predictions.json"
python - "$runs" "$out" <<'PY'
import json, sys
from pathlib import Path
from export.sweep import markdown
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("teacher", "student-distilled", "student"):
    report = json.loads((runs / f"sweep-{name}.json").read_text())
    (out / f"sweep-{name}.md").write_text(markdown(report) + "\n\nchosen: " + json.dumps(report["chosen"]) + "\n")
PY
