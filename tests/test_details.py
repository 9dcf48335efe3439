"""What a sure sentence says beyond the detectors (edgecap.details): actions and places are kept only
when the model says them consistently."""
from types import SimpleNamespace

from edgecap.caption import Describer
from edgecap.details import agreement, stem, supported_part
from edgecap.vision.grounding import GroundingRules, grounding_table
from edgecap.vision.perception import Detection, Perception

TABLE = grounding_table()
MIDDLE = (0.3, 0.3, 0.7, 0.8)


def only(*allowed):
    return lambda word: stem(word) in {stem(w) for w in allowed}


def test_a_sentence_ends_before_its_first_unsupported_phrase():
    car = "A car is driving through the street."
    assert supported_part(car, only("driving", "street"), TABLE) == car
    assert supported_part(car, only("driving"), TABLE) == "A car is driving."
    assert supported_part(car, only("street"), TABLE) == "There is a car."  # no action: what is seen
    assert supported_part("A person is sitting on a beach with a boat on the water.", only("sits", "beach"),
                          TABLE) == "A person is sitting on a beach with a boat."  # the boat is checked
    assert supported_part("Two dogs play in the grass.", only(), TABLE) == "There are two dogs."
    assert supported_part("A dog runs on a dirt path.", only("running"), TABLE) == "A dog runs."
    assert supported_part("A teddy bear is sitting on a dining table.", only("sitting"), TABLE) == \
        "A teddy bear is sitting on a dining table."  # multi-word things are checked, not claims
    assert supported_part("A car is driving.", only(), TABLE, verbs=False) == "A car is driving."
    assert supported_part("A man walks in the rain.", only(), TABLE) == "There is a man."
    assert supported_part("A view of the mountains.", only(), TABLE) == "A view of the mountains."  # nothing checked


def test_agreement_counts_candidates_and_neighbours_by_stem():
    share = agreement(["A dog runs on the beach.", "A dog is running in the grass."],
                      ["A dog is running.", "A cat sits.", "Two dogs run on the sand.", "A bird."])
    assert share("running") == (1.0, 0.5)
    assert share("beach") == (0.5, 0.0)


def test_a_place_only_one_candidate_says_is_not_said_as_sure():
    rules = GroundingRules(sure={"dog": 0.5}, likely={"dog": 0.3})
    describer = Describer(SimpleNamespace(memory=None, bundle=None), None, rules)
    seen = Perception((Detection("dog", 0.9, MIDDLE),), (), (), 0.0)
    pool = ["A dog is running on the beach."] + ["A dog is running in the grass."] * 9
    assert describer._choose(pool, None, {}) == pool[0]  # without a memory the first candidate is chosen
    choice = describer.decide_texts(pool, None, seen)
    assert (choice.sentence, choice.confidence) == ("A dog is running.", "sure")
    assert choice.model_caption == pool[0]
    off = Describer(describer.captioner, None, GroundingRules(sure={"dog": 0.5}, likely={"dog": 0.3},
                                                             check_details=False))
    assert off.decide_texts(pool, None, seen).sentence == pool[0]


def test_hedged_sentences_do_not_guess_who_a_person_is():
    rules = GroundingRules(sure={"person": 0.8}, likely={"person": 0.4})
    describer = Describer(SimpleNamespace(memory=None, bundle=None), None, rules)
    weak = Perception((Detection("person", 0.5, MIDDLE),), (), (), 0.0)
    pool = ["A little boy in a red shirt is climbing a rock."] * 3
    choice = describer.decide_texts(pool, None, weak)
    assert (choice.sentence, choice.confidence) == ("Probably a person is climbing a rock.", "hedged")
    keep = Describer(describer.captioner, None, GroundingRules(sure={"person": 0.8}, likely={"person": 0.4},
                                                               generic_hedges=False))
    assert keep.decide_texts(pool, None, weak).sentence == "Probably a little boy in a red shirt is climbing a rock."


def test_what_a_cut_sentence_names_is_what_it_still_says():
    rules = GroundingRules(sure={"person": 0.5, "boat": 0.5})
    describer = Describer(SimpleNamespace(memory=None, bundle=None), None, rules)
    seen = Perception((Detection("person", 0.9, MIDDLE), Detection("boat", 0.9, (0.1, 0.1, 0.3, 0.3))), (), (), 0.0)
    pool = ["A person is sitting on a beach with a boat."] + ["A person is sitting on a dock."] * 9
    choice = describer.decide_texts(pool, None, seen)
    assert (choice.sentence, choice.named) == ("A person is sitting.", ("person",))
