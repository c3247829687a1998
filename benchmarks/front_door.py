"""The front door as a user meets it (issue #33's acceptance figures), measured on this machine:

1. cold start: the wall time of ``expressnet predict PHOTO`` in a fresh process, ``--runs`` times (median);
2. the core install: the size of a core-only virtual environment's site-packages (``make install-core``), with and
   without what every venv has (pip, setuptools), and that torch is not in it;
3. determinism: ``expressnet predict FOLDER --json`` twice, the second time while ``--burners`` processes spin on
   the CPU (the load that used to flip the backend choice): the two files must be byte-identical;
4. ``import expressnet``: its time and whether it imports torch (``python -X importtime``).

The machine's load average is printed with each figure: compare figures measured under the same load.

    python benchmarks/front_door.py --core-python .venv-core/bin/python     # make bench-front-door
    python benchmarks/front_door.py --expressnet /other/venv/bin/expressnet --skip-size   # another install
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "expressnet" / "assets" / "astronaut.jpg"
FOLDER = ROOT.parent / "shared" / "data" / "photos" / "group"
EVERY_VENV = ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth", "pkg_resources")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cold_start(expressnet: str, photo: Path, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            start = time.perf_counter()
            done = subprocess.run([expressnet, "predict", str(photo)], cwd=tmp, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"expressnet predict failed: {done.stderr[-2000:]}")
    return times


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def site_packages(python: str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def install_size(python: str) -> None:
    site = site_packages(python)
    sizes = {p.name: folder_size(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    total = sum(sizes.values())
    base = sum(v for k, v in sizes.items() if k.split("-")[0] in EVERY_VENV)
    has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    print(
        f"core install {site}: {total / 1e6:.0f} MB; without pip and setuptools (in every venv): "
        f"{(total - base) / 1e6:.0f} MB; torch importable: {has_torch}"
    )
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:12]
    print("  largest: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in top))


def burn(stop) -> None:
    while not stop.is_set():
        pass


def determinism(expressnet: str, folder: Path, burners: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outputs = []
        for loaded in (False, True):
            stop = multiprocessing.Event()
            spinners = [multiprocessing.Process(target=burn, args=(stop,)) for _ in range(burners if loaded else 0)]
            for p in spinners:
                p.start()
            try:
                target = Path(tmp) / f"{'loaded' if loaded else 'quiet'}.jsonl"
                start = time.perf_counter()
                command = [expressnet, "predict", str(folder), "--json", str(target), "--no-progress"]
                done = subprocess.run(command, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                state = load()
            finally:
                stop.set()
                for p in spinners:
                    p.join()
            if done.returncode not in (0, 1):
                raise SystemExit(f"expressnet predict failed: {done.stderr[-2000:]}")
            data = target.read_bytes()
            outputs.append(data)
            print(
                f"  {'with ' + str(burners) + ' CPU burners' if loaded else 'as the machine is'}: {seconds:.1f} s, "
                f"{len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]} ({state})"
            )
        print(f"byte-identical JSON on {folder}: {outputs[0] == outputs[1]}")


def import_time(python: str) -> None:
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import expressnet"], capture_output=True, text=True, check=True
    )
    lines = [line for line in done.stderr.splitlines() if "|" in line and "import time:" in line]
    total = next(int(line.split("|")[1]) for line in lines if line.split("|")[-1].strip() == "expressnet")
    torch = any(line.split("|")[-1].strip() == "torch" for line in lines)
    print(f"import expressnet: {total / 1e6:.3f} s (cumulative, -X importtime), imports torch: {torch} ({load()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expressnet", default=str(Path(sys.executable).with_name("expressnet")))
    parser.add_argument("--core-python", help="the python of a core-only venv (make install-core)")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-size", action="store_true")
    args = parser.parse_args()
    python = str(Path(args.expressnet).with_name("python"))
    import_time(python)
    times = cold_start(args.expressnet, args.photo, args.runs)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"cold `expressnet predict {args.photo.name}`: median {statistics.median(times):.2f} s of {shown} ({load()})")
    if args.core_python and not args.skip_size:
        install_size(args.core_python)
        core = str(Path(args.core_python).with_name("expressnet"))
        times = cold_start(core, args.photo, args.runs)
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"cold start, core install: median {statistics.median(times):.2f} s of {shown} ({load()})")
    if args.folder.is_dir():
        determinism(args.expressnet, args.folder, args.burners)
    else:
        print(f"{args.folder}: not found; determinism not measured")


if __name__ == "__main__":
    main()
