"""How the detector thresholds are fitted (bench/ground_calibrate.py): a "sure" threshold must hold at
its own score, not only on average over the many strong detections above it."""
import argparse
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import ground_calibrate as gc  # noqa: E402


def person_like():
    """Like the person class on train photos: many strong detections, all right; weak ones right 60%."""
    strong = [(0.9, True)] * 90
    weak = [(0.32, i % 5 < 3) for i in range(10)] + [(0.5, i % 10 < 9) for i in range(10)]
    return strong + weak


def test_the_average_above_a_threshold_hides_weak_detections():
    pairs = person_like()
    assert gc.precision_threshold(pairs, 0.85) == 0.32  # 96 of 110 at or above 0.32 are right
    assert gc.per_score_threshold(pairs, 0.85) == 0.5  # but at 0.32 itself only 60% are
    assert gc.per_score_threshold(pairs, 0.95) == 0.9
    assert gc.per_score_threshold([(0.4, False), (0.8, False)], 0.8) is None


def test_isotonic_fit_never_falls_as_the_score_rises():
    scores, fitted, support = gc.isotonic([(0.3, True), (0.4, False), (0.5, False), (0.6, True), (0.9, True),
                                           (0.9, False), (0.9, True)])
    assert list(scores) == [0.3, 0.4, 0.5, 0.6, 0.9]  # equal scores are one point
    assert all(a <= b for a, b in zip(fitted, fitted[1:]))
    assert fitted[0] == fitted[1] == fitted[2] and abs(fitted[0] - 1 / 3) < 1e-9 and list(support[:3]) == [3, 3, 3]
    assert abs(fitted[-1] - 3 / 4) < 1e-9 and support[-1] == 4  # 0.6 and 0.9 pooled: 1.0 then 2/3 violates


def test_a_rare_class_borrows_from_the_pooled_curve():
    pooled = gc.isotonic(person_like())
    few = [(0.55, True), (0.6, True)]  # two photos, both right: not enough alone for a low threshold
    assert gc.per_score_threshold(few, 0.85) == 0.55
    assert gc.per_score_threshold([(0.35, True)], 0.85, pooled) is None  # pooled says 0.35 is too weak
    args = argparse.Namespace(sure_precision=0.8, likely_precision=0.7, floor=0.3, fitted_on="test", per_score=True)
    photos = [{"objects": [["person", s, [0, 0, 1, 1]]], "faces": [], "labels": []} for s, _ in person_like()]
    truths = [{"person"} if ok else set() for _, ok in person_like()]
    rules = gc.fit(photos, truths, [[]] * len(photos), None, args)["rules"]
    assert rules["sure"]["person"] == 0.5 and rules["likely"]["person"] == 0.5
    args.per_score = False
    assert gc.fit(photos, truths, [[]] * len(photos), None, args)["rules"]["sure"]["person"] == 0.32
