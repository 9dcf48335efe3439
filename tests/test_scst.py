"""Self-critical fine-tuning: its CIDEr-D reward, hallucination count and policy step."""
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocoevalcap")

from edgecap.metrics.cider import CiderD  # noqa: E402
from export.scoring import HallucinationCounter  # noqa: E402
from export.scst import sample_captions, sequence_log_probs  # noqa: E402
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = DATA / "captioned" / "captions.jsonl"
SYNONYMS = DATA / "chair" / "synonyms.txt"

REFERENCES = [
    ["a cat sits on a wooden floor", "an orange tabby cat looks at the camera", "a striped cat lying down",
     "a ginger cat with green eyes", "the cat is resting on the ground"],
    ["a cup of coffee on a saucer", "a white mug of coffee with foam", "coffee in a white cup on a table",
     "a cappuccino in a cup", "a cup of hot coffee"],
    ["an astronaut in a white suit", "a woman astronaut poses with a flag", "a smiling astronaut in uniform",
     "a portrait of a female astronaut", "an astronaut holding a helmet"],
]


def _val_references(n=200):
    if not CAPTIONS.is_file():
        pytest.skip(f"no caption data at {CAPTIONS}")
    rows = [json.loads(line) for line in CAPTIONS.read_text().splitlines() if line.strip()]
    return [r["captions"] for r in rows if r["split"] == "val"][:n]


def test_cider_d_matches_pycocoevalcap_on_real_captions():
    from pycocoevalcap.cider.cider import Cider

    from edgecap.metrics.text_normalise import simple_tokenize

    refs = _val_references()
    # each photo's candidate: another photo's first caption, or a clipped own caption
    candidates = [refs[(i + 1) % len(refs)][0] if i % 3 else refs[i][1][:25] for i in range(len(refs))]
    ours = CiderD(refs, end_token=False)
    mean = sum(ours.score(c, i) for i, c in enumerate(candidates)) / len(refs)
    gts = {i: [simple_tokenize(r) for r in rr] for i, rr in enumerate(refs)}
    res = {i: [simple_tokenize(c)] for i, c in enumerate(candidates)}
    assert mean == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-9)


def test_end_token_stops_rewarding_cut_off_captions():
    with_end, without = CiderD(REFERENCES), CiderD(REFERENCES, end_token=False)
    whole, cut = "a cup of coffee on a saucer", "a cup of coffee on a"
    assert with_end.score(whole, 1) > with_end.score(cut, 1)
    assert with_end.score(cut, 1) / with_end.score(whole, 1) < without.score(cut, 1) / without.score(whole, 1)
    assert with_end.score("a cat sits on a wooden floor", 0) > 3 * with_end.score("a cat sits on a wooden floor", 1)


def test_hallucinated_objects_are_those_no_reference_names():
    count = HallucinationCounter(REFERENCES, SYNONYMS if SYNONYMS.is_file() else None)
    assert count("a cat sits next to a dog", 0) == 1
    assert count("two cats and a laptop on a couch", 0) == 2
    assert count("a cup of coffee on a table", 1) == 0


def test_policy_step_raises_the_probability_of_rewarded_captions(tiny):
    model, _ = tiny
    model = type(model)(model.cfg)
    model.load_state_dict(tiny[0].state_dict())
    model.eval()
    torch.manual_seed(0)
    grid = torch.randn(2, 16, model.backbone.out_channels)
    tokens = sample_captions(model, grid, samples=4, max_new_tokens=8)
    assert tokens.shape[0] == 8 and bool((tokens[:, 0] == BOS_ID).all())
    ended = (tokens == EOS_ID).cumsum(1) > 0
    assert bool((tokens[:, 1:][ended[:, :-1]] == PAD_ID).all()), "nothing but PAD after EOS"
    logp = sequence_log_probs(model, grid, tokens, samples=4)
    # the first sample of each photo is rewarded, the others are not
    advantage = torch.tensor([0.75, -0.25, -0.25, -0.25] * 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)  # small: the claim is about the gradient's direction
    (-(advantage * logp).mean()).backward()
    opt.step()
    with torch.no_grad():
        after = sequence_log_probs(model, grid, tokens, samples=4)
    assert bool((after[[0, 4]] > logp.detach()[[0, 4]]).all())
