"""The default-model decision, side by side: validation first (the rule), then the test protocols and the
labelled photos, for the current default and a candidate.

    python benchmarks/default_choice.py [--old fer2013] [--new runs/fer2013-rafdb] [--out reports/default-choice]

Validation (what the rule in configs/fer2013-rafdb.yaml reads): FER-2013 PublicTest and RAF-DB's seeded 10 %
of train. Test (reported, never used to choose): FER-2013 PrivateTest, the paper's PublicTest+PrivateTest,
RAF-DB test, and the seven labelled photos of ../shared/data/photos/labelled (BlazeFace + the model, label from
the file name). Every model runs on the torch backend with its own flip averaging and preprocessing. Writes
``summary.json`` and ``summary.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from expressnet import Recognizer
from expressnet.data import canonical, data_root, load_dataset, prepare_split
from expressnet.evaluate.core import evaluate_prepared
from expressnet.io import atomic_write_text
from expressnet.runtime import load_classifier

VALIDATION = [("fer2013", "PublicTest"), ("rafdb", "val")]
TEST = [("fer2013", "PrivateTest"), ("fer2013", "PublicTest+PrivateTest"), ("rafdb", "test")]


dataset = functools.cache(load_dataset)  # each dataset is read once for both models


def scores(model: str) -> dict[str, list[dict]]:
    """Accuracy and macro-F1 of ``model`` on the validation and the test protocols."""
    net = load_classifier(model, "torch")
    out: dict[str, list[dict]] = {}
    for part, protocols in (("validation", VALIDATION), ("test", TEST)):
        out[part] = []
        for data, split in protocols:
            prepared = prepare_split(dataset(data).split(split).relabel(net.class_names), net.preprocessing)
            m = evaluate_prepared(net, prepared, net.tta_flip, routing=False)
            out[part].append(
                {"data": data, "split": split, "n": int(m["n"]), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
            )
    return out


def photos(model: str, folder: Path) -> dict:
    recognizer = Recognizer(model, backend="torch")
    found = []
    for path in sorted(folder.iterdir()):
        faces = recognizer.predict(path)
        label = canonical(path.stem.split("_")[0])
        emotion = canonical(max(faces, key=lambda f: f.score).emotion) if faces else None  # the most certain face
        found.append({"photo": path.name, "label": label, "predicted": emotion, "agree": emotion == label})
    return {"n": len(found), "agree": sum(f["agree"] for f in found), "photos": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="fer2013")
    parser.add_argument("--new", default="runs/fer2013-rafdb")
    parser.add_argument("--out", type=Path, default=Path("reports/default-choice"))
    args = parser.parse_args()

    result = {}
    for role, model in (("old", args.old), ("new", args.new)):
        result[role] = {"model": model, **scores(model), "photos": photos(model, data_root() / "photos" / "labelled")}
    lines = [
        f"| protocol | n | {args.old}: accuracy | macro-F1 | {args.new}: accuracy | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part in ("validation", "test"):
        for a, b in zip(result["old"][part], result["new"][part]):
            name = f"{part}: {a['data']} {a['split']}"
            lines.append(
                f"| {name} | {a['n']:,} | {a['accuracy']:.2%} | {a['macro_f1']:.3f} | {b['accuracy']:.2%} | "
                f"{b['macro_f1']:.3f} |"
            )
    old, new = result["old"]["photos"], result["new"]["photos"]
    lines.append(f"| labelled photos (agree) | {old['n']} | {old['agree']} | | {new['agree']} | |")
    table = "\n".join(lines).replace("%", " %")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "summary.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
