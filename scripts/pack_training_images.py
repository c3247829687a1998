"""Pack a dataset's images into a small folder that ``expressnet.data.load_dataset`` reads, for a GPU machine that
has no ``../shared/data`` (``scripts/gpu_paper_run.sh`` carries it there).

- ``--data rafdb``: the Kaggle layout (``DATASET/{train,test}/<1..7>/*_aligned.jpg`` + ``train_labels.csv`` /
  ``test_labels.csv``), the original JPEG files copied byte for byte (100x100 RGB, aligned; about 39 MB for all
  15,339). The model's preprocessing resizes them to 224x224 (bilinear, as the paper) when the run reads them.
- ``--data fer2013``: the Kaggle image-folder layout (``train/<emotion>/Training_*.jpg``,
  ``test/<emotion>/{PublicTest,PrivateTest}_*.jpg``), 48x48 gray JPEGs at ``--quality`` (native resolution: the
  run upsamples them to 224x224 RGB as the paper does).

The output folder must stay out of git (``.carry/`` is ignored): RAF-DB and FER-2013 are research-only data.
``--limit N`` keeps a seeded, stratified subset of at most N images per split (for a quick proof run).
The size of the pack is printed; a device machine takes at most 64 MiB of carried files per run.

    python scripts/pack_training_images.py --data rafdb --out .carry/rafdb
    python scripts/pack_training_images.py --data fer2013 --out .carry/fer2013
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from expressnet.data import Dataset, load_dataset, stratified_indices
from expressnet.data.labels import FER2013_CLASSES

CARRY_LIMIT = 64 * 2**20  # bytes a device run carries in all


def chosen_indices(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded stratified subset of ``limit`` of them."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    _, keep = stratified_indices(labels, limit / len(labels), seed)
    return keep


def pack_rafdb(spec: str, out: Path, limit: int | None, seed: int) -> int:
    """Copy the Kaggle-layout files (all, or ``limit`` per split); returns the number of images."""
    dataset = load_dataset(spec)
    root = Path(dataset.root)
    base = root / "DATASET" if (root / "DATASET").is_dir() else root
    total = 0
    for split in ("train", "test"):
        src = next(p for p in (root / f"{split}_labels.csv", base / f"{split}_labels.csv") if p.is_file())
        with src.open(newline="") as f:
            rows = list(csv.DictReader(f))
        rows = [r for r in rows if (base / split / r["label"] / r["image"]).is_file()]
        labels = np.array([int(r["label"]) for r in rows])
        rows = [rows[i] for i in chosen_indices(labels, limit, seed)]
        for r in rows:
            target = out / "DATASET" / split / r["label"] / r["image"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / split / r["label"] / r["image"], target)
        with (out / f"{split}_labels.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label"])
            writer.writerows((r["image"], r["label"]) for r in rows)
        total += len(rows)
    return total


def pack_fer2013(spec: str, out: Path, limit: int | None, seed: int, quality: int) -> int:
    """Write the FER-2013 splits as 48x48 gray JPEGs in the Kaggle folder layout; returns the number of images."""
    dataset: Dataset = load_dataset(spec)
    total = 0
    for split, folder in (("Training", "train"), ("PublicTest", "test"), ("PrivateTest", "test")):
        part = dataset.split(split)
        if part.class_names != FER2013_CLASSES:
            raise SystemExit(f"{spec}: classes {part.class_names} are not FER-2013's")
        for j, i in enumerate(chosen_indices(part.labels, limit, seed)):
            image = part.image(int(i))
            target = out / folder / part.class_names[part.labels[i]] / f"{split}_{j:05d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target, quality=quality)
            total += 1
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="rafdb or fer2013 (known names) or a path of that dataset")
    parser.add_argument("--kind", choices=("rafdb", "fer2013"), help="default: the name given to --data")
    parser.add_argument("--out", required=True, type=Path, help="output folder (keep it under the ignored .carry/)")
    parser.add_argument("--limit", type=int, help="at most this many images per split (seeded, stratified)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (FER-2013)")
    args = parser.parse_args(argv)
    kind = args.kind or args.data
    if kind not in ("rafdb", "fer2013"):
        parser.error("--kind rafdb|fer2013 is needed when --data is a path")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    if kind == "rafdb":
        n = pack_rafdb(args.data, args.out, args.limit, args.seed)
    else:
        n = pack_fer2013(args.data, args.out, args.limit, args.seed, args.quality)
    size = folder_bytes(args.out)
    check = load_dataset(args.out)
    counts = {name: len(split) for name, split in check.splits.items()}
    print(f"{args.out}: {n:,} images, {size:,} bytes ({size / 2**20:.1f} MiB); reads back as {counts}")
    if size > CARRY_LIMIT:
        print(f"{args.out}: larger than the {CARRY_LIMIT // 2**20} MiB a device run carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
