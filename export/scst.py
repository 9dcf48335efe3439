"""Self-critical fine-tuning: reward sampled captions with CIDEr-D, minus hallucinated objects.

Cross-entropy training stops improving CIDEr early (the teacher plateaus around epoch 20):
it teaches the next word of a human caption, not a caption a listener can rely on.
Here the model samples K captions per training photo, each is scored against that
photo's human captions, and the policy gradient pushes up the captions that beat the
mean of the photo's other samples (the baseline needs no extra greedy pass).

The reward is CIDEr-D (idf from the train references, an end-of-caption token on both
sides so truncated captions are not rewarded) minus `hallucination_penalty` for every
COCO object the caption names that none of the photo's references names: on a
training photo that is an object the person did not see.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgecap.core.decoding import DecodingOptions, Pool
from edgecap.metrics.cider import CiderD
from export.data import DEFAULT_DATA, CaptionData, feature_cache, pad_ids
from export.pipeline import load_checkpoint, save_checkpoint
from export.scoring import HallucinationCounter, rounded, score
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID, encode_caption
from export.torch_decoder import TOKENS, caption_tokens, decode_grid

log = logging.getLogger(__name__)
NEVER_SAMPLED = list(TOKENS.suppress_ids)  # what the decode loop never emits, so never pushed up or down


@dataclass(frozen=True)
class FinetuneOptions:
    minutes: float = 18.0
    samples: int = 5  # captions sampled per photo
    photos_per_batch: int = 32
    lr: float = 4e-5
    max_new_tokens: int = 20
    hallucination_penalty: float = 0.6  # reward lost per named object absent from every reference
    xe_weight: float = 1.0  # cross-entropy on one human caption per photo: holds the vocabulary
    eval_every: int = 40  # steps between val checks (the shipped run's)
    val_photos: int = 300


def sample_captions(model, grid: torch.Tensor, samples: int, max_new_tokens: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """(B*samples, 1 + max_new_tokens) token ids: BOS, sampled words, EOS then PAD.

    Sampled by edgecap.core.decoding (one loop per photo, as at run time), each photo with a
    random stream drawn from torch's, so torch.manual_seed fixes the samples.
    """
    options = DecodingOptions(beam_size=1, temperature=temperature, min_length=0, max_length=max_new_tokens,
                              rerank=False)
    seeds = torch.randint(0, 2 ** 62, (len(grid),)).tolist()
    pools = decode_grid(model, grid, options, pool=Pool(samples=samples - 1, temperature=temperature), seeds=seeds)
    rows = [[BOS_ID, *d.tokens, *([EOS_ID] if len(d.tokens) < max_new_tokens else [])]
            for pool in pools for d in pool]
    return pad_ids(rows, 1 + max_new_tokens)


def sequence_log_probs(model, grid: torch.Tensor, tokens: torch.Tensor, samples: int) -> torch.Tensor:
    """Sum of log p(token) over each sampled caption, its EOS included."""
    grid = grid.repeat_interleave(samples, dim=0)
    logits = model(grid, tokens[:, :-1]).float()
    # The policy being trained is the one sampled: without this mask, pushing down a poor
    # caption's words moves their probability onto [UNK]/[PAD], unseen and unpenalised,
    # until training collapses.
    logits[..., NEVER_SAMPLED] = float("-inf")
    target = tokens[:, 1:]
    logp = F.log_softmax(logits, -1).gather(-1, target[..., None]).squeeze(-1)
    return torch.where(target != PAD_ID, logp, 0.0).sum(1)  # PAD after EOS is masked to -inf: 0 * -inf is NaN


def human_caption_loss(model, grid: torch.Tensor, photos: list[int], data: CaptionData, tokenizer) -> torch.Tensor:
    ids = [encode_caption(tokenizer, random.choice(data.records[p].captions), model.cfg.max_len) for p in photos]
    tokens = pad_ids(ids, max(len(i) for i in ids))
    logits = model(grid, tokens[:, :-1]).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD_ID)


def finetune(checkpoint: Path, out: Path, options: FinetuneOptions = FinetuneOptions(),
             data_dir: Path = DEFAULT_DATA, cache_dir: Path = Path("cache"), seed: int = 0) -> Path:
    from tokenizers import Tokenizer

    torch.manual_seed(seed)
    random.seed(seed)
    start = time.time()
    model, tokenizer_json, calibration, provenance = load_checkpoint(checkpoint)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    data = CaptionData(model.cfg.encoder, model.cfg.image_size, data_dir, cache_dir, ("train",))
    references = [list(r.captions) for r in data.records]
    synonyms = data_dir / "chair" / "synonyms.txt"
    synonyms = synonyms if synonyms.exists() else None
    cider = CiderD(references)
    hallucinations = HallucinationCounter(references, synonyms)
    val_recs, val_feats = feature_cache(model.cfg.encoder, model.cfg.image_size, "val", False, data_dir, cache_dir)
    val_feats = torch.from_numpy(np.asarray(val_feats[:options.val_photos]))
    val_refs = [r.captions for r in val_recs[:options.val_photos]]
    log.info("self-critical fine-tuning of %s on %d photos; %.0f s to load", checkpoint, len(references),
             time.time() - start)

    def validate() -> dict:
        preds = [tokenizer.decode(t) for t in caption_tokens(model, val_feats)]
        return rounded(score(preds, val_refs, synonyms))

    params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.Adam(params, lr=options.lr)
    history = [{"step": 0, "minutes": 0.0, **validate()}]
    log.info("before: %s", json.dumps(history[0]))
    best_key = _selection_key(history[0])
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    rows, step, rewards = list(range(len(references))), 0, []
    while time.time() - start < options.minutes * 60:
        random.shuffle(rows)
        for b in range(0, len(rows) - options.photos_per_batch + 1, options.photos_per_batch):
            photos = rows[b:b + options.photos_per_batch]
            grid = data.features[photos].float()
            model.eval()  # no dropout: the sampled policy is the one being scored
            tokens = sample_captions(model, grid, options.samples, options.max_new_tokens)
            captions = tokenizer.decode_batch(tokens.tolist())  # specials skipped; only PAD follows EOS
            owners = [p for p in photos for _ in range(options.samples)]
            reward = torch.tensor([cider.score(c, p) - options.hallucination_penalty * hallucinations(c, p)
                                   for c, p in zip(captions, owners)]).view(len(photos), options.samples)
            baseline = (reward.sum(1, keepdim=True) - reward) / (options.samples - 1)
            advantage = (reward - baseline).view(-1)
            logp = sequence_log_probs(model, grid, tokens, options.samples)
            loss = -(advantage * logp).mean()
            if options.xe_weight > 0:
                loss = loss + options.xe_weight * human_caption_loss(model, grid, photos, data, tokenizer)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            rewards.append(float(reward.mean()))
            step += 1
            if step % options.eval_every == 0:
                row = {"step": step, "minutes": round((time.time() - start) / 60, 2),
                       "train_reward": round(float(np.mean(rewards[-options.eval_every:])), 4), **validate()}
                history.append(row)
                log.info("%s", json.dumps(row))
                if _selection_key(row) > best_key:
                    best_key, best_state = _selection_key(row), {k: v.clone() for k, v in model.state_dict().items()}
            if time.time() - start > options.minutes * 60:
                break
    model.load_state_dict(best_state)
    provenance = {**provenance, "finetune": {"method": "self-critical (CIDEr-D minus hallucinated objects)",
                                             "from": str(checkpoint), "options": asdict(options),
                                             "history": history, "minutes": round((time.time() - start) / 60, 1)}}
    out = Path(out)
    save_checkpoint(out, model.eval(), tokenizer_json, calibration, provenance)
    out.with_suffix(".history.json").write_text(json.dumps(provenance, indent=2, default=str))
    return out


def _selection_key(row: dict) -> float:
    """Val CIDEr, less what the hallucinated objects cost: the same trade the reward makes."""
    return row["cider"] - (row["chair_i"] or 0.0)
