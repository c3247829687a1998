"""The shipped models' records (expressnet/weights/models.json): check or write each file's sha256 and size, and
measure each model's metrics on its inference file (the path `Recognizer`, `predict` and `serve` run on a CPU:
``load_classifier(name)``, backend "auto"), on its validation and test protocols. Needs the datasets
($EXPRESSNET_DATA or ../shared/data) and the train extra (scikit-learn).

    python benchmarks/model_records.py                      # print the figures; check the hashes
    python benchmarks/model_records.py --write              # write hashes, sizes and metrics into the records
    python benchmarks/model_records.py --models ferplus --write
    python benchmarks/model_records.py --hashes-only --write   # files only (no data needed)

Adding a shipped model: copy its files into expressnet/weights/, add its record (name, files, checkpoint,
inference, precision, classes, preprocessing, recipe, licence, data notes) to models.json, then run this with
``--models NAME --write``; tests/test_hub.py checks every hash and that the record agrees with the files.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np

from expressnet.data import load_dataset, prepare_split
from expressnet.evaluate.metrics import classification_metrics
from expressnet.hub import RECORDS_FILE, WEIGHTS_DIR, records
from expressnet.io import atomic_write_text, file_sha256
from expressnet.runtime import load_classifier

PROTOCOLS = {  # a model's training data -> (dataset, split, role) of its validation and test protocols
    "fer2013": [
        ("fer2013", "PublicTest", "validation"),
        ("fer2013", "PrivateTest", "test"),
        ("fer2013", "PublicTest+PrivateTest", "test"),
    ],
    "ferplus": [
        ("ferplus", "PublicTest", "validation"),
        ("ferplus", "PrivateTest", "test"),
        ("ferplus-majority", "PrivateTest", "test"),
    ],
    "rafdb": [("rafdb", "val", "validation"), ("rafdb", "test", "test")],
}
KEPT = ("n", "accuracy", "macro_f1", "balanced_accuracy", "ece", "nll")

dataset = functools.cache(load_dataset)  # each dataset is read once, however many models use it


def protocols(data: str) -> list[tuple[str, str, str]]:
    """The protocols of a model trained on ``data`` (``fer2013+rafdb``: both datasets')."""
    return [
        p
        for part in data.split("+")
        for p in PROTOCOLS.get(part, [(part, "val", "validation"), (part, "test", "test")])
    ]


def predictions(classifier, data: str, split: str, done: dict) -> tuple:
    """Probabilities and labels of one protocol; a joined split (``A+B``) whose parts were measured reuses them."""
    parts = split.split("+")
    if len(parts) > 1 and all((data, part) in done for part in parts):
        return tuple(np.concatenate([done[data, part][i] for part in parts]) for i in (0, 1))
    prepared = prepare_split(
        dataset(data).split(split).relabel(classifier.class_names), classifier.preprocessing, False
    )
    done[data, split] = classifier.probabilities(prepared.images.numpy()), prepared.labels.numpy()
    return done[data, split]


def measure(name: str, record) -> list[dict]:
    classifier = load_classifier(name)  # the inference file, by the fixed rule ("auto" on a CPU)
    out, done = [], {}
    for data, split, role in protocols(record.recipe.get("data", "fer2013")):
        start = time.perf_counter()
        probs, labels = predictions(classifier, data, split, done)
        seconds = time.perf_counter() - start
        metrics = classification_metrics(probs, labels, classifier.class_names)
        entry = {"data": data, "split": split, "role": role, **{k: metrics[k] for k in KEPT}}
        entry = {k: round(v, 6) if isinstance(v, float) else v for k, v in entry.items()}
        entry.update(backend=classifier.backend, precision=classifier.precision, file=record.inference)
        out.append(entry)
        print(
            f"{name} {data} {split} (n={entry['n']}, {classifier.backend} {classifier.precision}, {seconds:.1f} s): "
            f"accuracy {entry['accuracy']:.4f}  macro-F1 {entry['macro_f1']:.4f}  ECE {entry['ece']:.4f}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="shipped names (default: every record)")
    parser.add_argument("--write", action="store_true", help="write the figures into the records")
    parser.add_argument("--hashes-only", action="store_true", help="files only: no metrics (no data needed)")
    args = parser.parse_args()
    document = json.loads(RECORDS_FILE.read_text())
    known = records()
    for name in args.models or list(known):
        entry = document["models"][name]
        for file in entry["files"]:
            path = WEIGHTS_DIR / file
            now = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
            if entry["files"][file] != now:
                state = "differs from its record" if entry["files"][file] else "is not in its record yet"
                print(f"{name}: {file} {state}: {now}")
            entry["files"][file] = now
        if not args.hashes_only:
            entry["metrics"] = measure(name, known[name])
        if args.write:  # after each model: a long run that stops keeps what it measured
            atomic_write_text(RECORDS_FILE, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
            print(f"wrote {name}'s record into {RECORDS_FILE}", flush=True)


if __name__ == "__main__":
    main()
