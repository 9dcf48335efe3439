#!/usr/bin/env bash
# The recipe of the shipped default model, models/edgecap-base (run from the repo root):
# a calibrated teacher and its SPARC sweep; a student distilled from it, fine-tuned
# self-critically (CIDEr-D reward minus hallucinated objects), its sweep; both in int8;
# then the shipped bundle's caption memory (edgecap/core/memory.py).
# CPU-only it takes about 2.5 hours on 2 cores (teacher 55 min, student 40 min, fine-tuning
# 18 min); backbone features are cached under cache/. A stage whose output already exists
# is skipped, so an interrupted run resumes; delete runs/ to start over.
#   RECIPE=smoke RUNS=runs/smoke OUT=runs/smoke/bundle bash models/recipes/edgecap-base.sh   # minutes, every stage
set -euo pipefail
recipe=${RECIPE:-full}
runs=${RUNS:-runs}
data=${DATA:-../shared/data}
out=${OUT:-models/edgecap-base}
mkdir -p "$runs"
if [ "$recipe" = smoke ]; then teacher=smoke; student=smoke; images=100; finetune_minutes=1
else teacher=teacher; student=student; images=600; finetune_minutes=18; fi
stage() { local output=$1; shift; if [ -e "$output" ]; then echo "recipe: $output exists, skipped"; else "$@"; fi; }

stage "$runs/teacher.pt" python -m export -v train --recipe "$teacher" --data "$data" --out "$runs/teacher.pt"
stage "$runs/sweep-teacher.json" python -m export -v sweep --checkpoint "$runs/teacher.pt" --data "$data" \
  --images "$images" --out "$runs/sweep-teacher.json"
stage "$runs/student.pt" python -m export -v distill --recipe "$student" --teacher "$runs/teacher.pt" \
  --calibration-report "$runs/sweep-teacher.json" --data "$data" --out "$runs/student.pt"
stage "$runs/sweep-student-distilled.json" python -m export -v sweep --checkpoint "$runs/student.pt" --data "$data" \
  --images "$images" --out "$runs/sweep-student-distilled.json"
stage "$runs/student-scst.pt" python -m export -v finetune --checkpoint "$runs/student.pt" --data "$data" \
  --minutes "$finetune_minutes" --out "$runs/student-scst.pt"
stage "$runs/sweep-student.json" python -m export -v sweep --checkpoint "$runs/student-scst.pt" --data "$data" \
  --images "$images" --out "$runs/sweep-student.json"
# What ships: the fine-tuned student, calibrated, int8. The teacher and the student before
# fine-tuning are bundled too, for the model card's comparison.
python -m export -v bundle --checkpoint "$runs/student-scst.pt" --data "$data" --int8 --keep-fp32 "$runs/student-fp32" \
  --calibration-report "$runs/sweep-student.json" --out "$out"
# Its memory: the shipped model's own captions of the train photos, for reranking candidates.
python -m export -v memory --model "$out" --data "$data"
# Perception: objects (YOLOX-Nano at 320 px), faces (YuNet at 240 px) and the backbone's ImageNet head.
python -m export -v perception --model "$out" --data "$data" --detector-size 320 --face-size 240
python -m export -v bundle --checkpoint "$runs/student.pt" --data "$data" --int8 --keep-fp32 \
  "$runs/student-distilled-fp32" --calibration-report "$runs/sweep-student-distilled.json" \
  --name edgecap-student-distilled --out "$runs/student-distilled-int8"
python -m export -v bundle --checkpoint "$runs/teacher.pt" --data "$data" --int8 --keep-fp32 "$runs/teacher-fp32" \
  --calibration-report "$runs/sweep-teacher.json" --name edgecap-teacher --out "$runs/teacher-int8"
