import numpy as np
import pytest

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import (
    EMOTIONS,
    canonical_name,
    class_names,
    fer2013_codes_to_indices,
    ferplus_votes_to_targets,
    indices_to_fer2013_codes,
)


def test_canonical_order_is_fixed():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert class_names(include_contempt=True)[-1] == "contempt"


def test_fer2013_csv_codes_map_to_canonical_classes():
    names = [EMOTIONS[i] for i in fer2013_codes_to_indices(np.array([0, 1, 2, 3, 4, 5, 6]))]
    assert names == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert [EMOTIONS[i] for i in fer2013_codes_to_indices(np.array([4, 6]))] == ["sad", "neutral"]


def test_fer2013_codes_round_trip_and_reject_out_of_range():
    indices = np.arange(7)
    assert (fer2013_codes_to_indices(indices_to_fer2013_codes(indices)) == indices).all()
    with pytest.raises(FERDataError, match="0..6"):
        fer2013_codes_to_indices(np.array([7]))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Anger", "angry"),
        ("happiness", "happy"),
        ("SADNESS", "sad"),
        ("surprised", "surprise"),
        ("fearful", "fear"),
        ("disgusted", "disgust"),
        ("3_happy", "happy"),
        ("Neutral ", "neutral"),
        ("contempt", "contempt"),
        ("confused", None),
        ("NF", None),
    ],
)
def test_folder_name_synonyms(name, expected):
    assert canonical_name(name) == expected


def votes(**counts):
    order = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
    return [counts.get(c, 0) for c in order]


def test_ferplus_majority_rule():
    rows = np.array(
        [
            votes(happiness=8, surprise=2),  # clear happy
            votes(anger=4, sadness=4, neutral=2),  # no majority -> dropped
            votes(NF=10),  # not a face -> dropped
            votes(contempt=7, neutral=3),  # contempt -> dropped in 7-class mode
            votes(sadness=9, fear=1),  # lone fear vote removed as noise
        ]
    )
    keep, targets = ferplus_votes_to_targets(rows, "majority")
    assert keep.tolist() == [True, False, False, False, True]
    assert [EMOTIONS[t] for t in targets] == ["happy", "sad"]
    keep8, targets8 = ferplus_votes_to_targets(rows, "majority", include_contempt=True)
    assert keep8[3] and class_names(True)[targets8[1]] == "contempt"


def test_ferplus_soft_labels_are_distributions():
    keep, probs = ferplus_votes_to_targets(
        np.array([votes(happiness=6, surprise=4), votes(unknown=9, anger=1)]), "soft"
    )
    assert keep.tolist() == [True, False]
    assert probs.shape == (1, 7)
    assert probs[0, EMOTIONS.index("happy")] == pytest.approx(0.6)
    assert probs[0, EMOTIONS.index("surprise")] == pytest.approx(0.4)
