"""Canonical emotion vocabulary and each dataset's label order.

Every reader maps its own label ids to canonical names; models carry their ``class_names`` in metadata,
so predictions can always be compared by name, never by position.
"""

from __future__ import annotations

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

SYNONYMS = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "contempt": "contempt",
}

# Official fer2013.csv order (also our fer2013.npz and the Kaggle folder names).
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER+ vote columns (fer2013new.csv): 8 emotions, then unknown and not-a-face.
FERPLUS_VOTE_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
# RAF-DB basic: labels 1..7.
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")
# AffectNet Kaggle subset label names, alphabetical as in its labels.csv folders.
AFFECTNET8_CLASSES = ("angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")
AFFECTNET7_CLASSES = tuple(c for c in AFFECTNET8_CLASSES if c != "contempt")


def canonical(name: str) -> str:
    """Canonical emotion name for a label name in any dataset's spelling; ``ValueError`` if unknown."""
    key = name.strip().lower()
    if key not in SYNONYMS:
        raise ValueError(f"unknown emotion label {name!r}; known: {', '.join(sorted(SYNONYMS))}")
    return SYNONYMS[key]


def match_classes(source: tuple[str, ...] | list[str], target: tuple[str, ...] | list[str]) -> list[int | None]:
    """For each class of ``source``, its index in ``target`` when both name the same emotion (compared by
    :func:`canonical` name, so "anger" matches "angry"), else None. The one place classes are matched by name."""
    wanted = [canonical(c) for c in target]
    return [wanted.index(c) if c in wanted else None for c in (canonical(c) for c in source)]
