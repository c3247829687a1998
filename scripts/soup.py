"""A model soup: the weight average of fine-tuned checkpoints of one architecture, BatchNorm statistics
re-estimated on training images (torch's ``swa_utils.update_bn``), written as a new checkpoint to pack.

    python scripts/soup.py fer2013-fast runs/a/last.safetensors runs/b/last.safetensors -o runs/soup.safetensors \
        [--data fer2013 --split Training --images 8192]

Members are shipped names, checkpoint files or run folders (their best.safetensors). The output is never one of
them; its metadata lists the members and where the BatchNorm statistics came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from expressnet.checkpoint import average_checkpoints, save_checkpoint
from expressnet.data.prepare import Preprocessing
from expressnet.hub import resolve_model
from expressnet.nn import ExpressNetConfig, ExpressNetMoE
from expressnet.runtime import to_float
from expressnet.runtime.onnx import calibration_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", help="shipped names, checkpoints or run folders (two or more)")
    parser.add_argument("-o", "--out", required=True, type=Path, help="the soup's checkpoint (.safetensors)")
    parser.add_argument("--data", default="fer2013", help="dataset whose training split re-estimates BatchNorm")
    parser.add_argument("--split", default="Training", help="a training split (never validation or test)")
    parser.add_argument("--images", type=int, default=8192, help="how many of its images (seeded sample)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = [resolve_model(m) for m in args.members]
    if args.out.resolve() in {p.resolve() for p in paths}:
        parser.error(f"{args.out}: would overwrite a member")
    state, meta = average_checkpoints(paths)
    model = ExpressNetMoE(ExpressNetConfig.from_dict(meta["model_config"]))
    model.load_state_dict(state, strict=True)
    pre = Preprocessing.from_dict(meta["preprocessing"])
    images = torch.from_numpy(calibration_images(pre, args.data, args.split, args.images))  # seeded, training only
    batches = [to_float(images[i : i + 256]) for i in range(0, len(images), 256)]
    with torch.no_grad():
        update_bn(batches, model)  # resets the running statistics, then averages them over these images
    meta["soup"]["batchnorm"] = {"data": args.data, "split": args.split, "images": len(images)}
    save_checkpoint(args.out, model.eval().state_dict(), meta)
    print(
        f"wrote {args.out}: the average of {len(paths)} checkpoints, BatchNorm from {len(images):,} {args.split} images"
    )


if __name__ == "__main__":
    main()
