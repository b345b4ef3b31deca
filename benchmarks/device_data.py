"""Real CIFAR-100 onto a lent GPU machine, in chunks small enough for one device call each.

A device call carries at most 64 MiB of the working tree, CIFAR-100 is ~184 MB, and ignored files already
on a warm device machine stay there between calls. So ``pack`` writes both splits as chunk files of at most
``--chunk-mib`` (56) MiB into a git-ignored folder, with a manifest of the counts and the SHA-256 of every
chunk; consecutive device calls carry one chunk each; ``unpack`` on the device checks every chunk against
the manifest and writes the standard ``cifar-100-python/{train,test,meta}`` pickles that
:class:`~pckd_lightning.data.CIFAR100DataModule` (and its GPU-resident subclass) read, so
``data.root=<folder>`` just works.

    python benchmarks/device_data.py pack --root ../shared/data --out .device_data
    python benchmarks/device_data.py chunks --src .device_data     # the paths to carry, one call each
    python benchmarks/device_data.py unpack --src .device_data     # on the device: writes .device_data/cifar-100-python

A chunk is whole records of CIFAR's binary layout (one fine-label byte, then the 3072 bytes of the R, G, B
planes), so it is meaningful alone and the images come back bit-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # a plain checkout without `pip install -e .`
    sys.path.append(str(REPO / "src"))

from pckd_lightning.data.cifar100 import (  # noqa: E402
    FOLDER,
    read_cifar100,
    read_cifar100_class_names,
)
from pckd_lightning.errors import DataError  # noqa: E402

MANIFEST = "manifest.json"
FORMAT = "cifar100-records-v1"
PIXELS = 3 * 32 * 32
RECORD = 1 + PIXELS  # fine label, then the R, G, B planes (CIFAR's binary record, without the coarse label)
SPLITS = ("train", "test")
#: written into the unpacked folder: a second unpack of the same manifest is a no-op
STAMP = ".manifest-sha256"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _records(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[N, RECORD]`` uint8: label byte, then the image in the pickles' plane order."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), PIXELS)  # HWC -> R,G,B planes
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1)


def pack(root: Path, out: Path, chunk_mib: float = 56, check_sizes: bool = True) -> dict:
    """Write the chunks and the manifest of ``root``/cifar-100-python into ``out``; return the manifest."""
    per_chunk = int(chunk_mib * 2**20) // RECORD
    if per_chunk < 1:
        raise ValueError(f"--chunk-mib {chunk_mib} is smaller than one record ({RECORD} bytes)")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"format": FORMAT, "record_bytes": RECORD, "splits": {}}
    for split in SPLITS:
        images, labels = read_cifar100(root, split, check_sizes=check_sizes)
        records = _records(images, labels)
        chunks = []
        for i, start in enumerate(range(0, len(records), per_chunk)):
            data = records[start : start + per_chunk].tobytes()
            name = f"{split}.{i:03d}.bin"
            (out / name).write_bytes(data)
            chunks.append({"file": name, "count": len(data) // RECORD, "sha256": _sha256(data)})
        manifest["splits"][split] = {"count": len(records), "chunks": chunks}
    manifest["fine_label_names"] = read_cifar100_class_names(root)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(src: Path) -> dict:
    path = src / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no {path}. Fix: run `python benchmarks/device_data.py pack --out {src}` where the data is, and "
            f"carry {path} in a device call (it travels with every chunk)."
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}. Fix: pack again."
        )
    return manifest


def chunk_files(src: Path) -> list[Path]:
    """Every chunk the manifest in ``src`` lists, in order (what the device calls must carry)."""
    manifest = read_manifest(src)
    return [src / c["file"] for split in SPLITS for c in manifest["splits"][split]["chunks"]]


def _read_split(src: Path, split: str, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[N]`` and plane-order images ``[N, 3072]`` of a split, every chunk checked."""
    parts = []
    for chunk in info["chunks"]:
        path = src / chunk["file"]
        if not path.is_file():
            raise DataError(
                f"missing chunk {path} (of {len(info['chunks'])} for {split}). Fix: carry {path} in a "
                "device call while the machine is still warm (ignored files stay only on a warm machine)."
            )
        data = path.read_bytes()
        if len(data) != chunk["count"] * RECORD or _sha256(data) != chunk["sha256"]:
            raise DataError(
                f"corrupt chunk {path}: {len(data)} bytes, SHA-256 {_sha256(data)[:12]}…, but the manifest "
                f"says {chunk['count'] * RECORD} bytes, {chunk['sha256'][:12]}…. Fix: carry it again "
                "(or pack again if the manifest is from another pack)."
            )
        parts.append(np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD))
    records = np.concatenate(parts) if parts else np.zeros((0, RECORD), np.uint8)
    if len(records) != info["count"]:
        raise DataError(f"{split}: {len(records)} records in the chunks, the manifest says {info['count']}")
    return records[:, 0].astype(np.int64), np.ascontiguousarray(records[:, 1:])


def _dump(path: Path, obj: object) -> None:
    """Write a pickle atomically: an interrupted unpack leaves no half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(obj, f, protocol=4)
    os.replace(tmp, path)


def unpack(src: Path, dest: Path | None = None) -> Path:
    """Check every chunk against the manifest, write ``dest``/cifar-100-python; return that folder.

    ``dest`` defaults to ``src``, so ``data.root=<src>`` reads the result. Skipped when the folder was
    already unpacked from the same manifest.
    """
    dest = dest or src
    manifest = read_manifest(src)
    digest = _sha256((src / MANIFEST).read_bytes())
    folder = dest / FOLDER
    if (folder / STAMP).is_file() and (folder / STAMP).read_text() == digest:
        return folder
    splits = {split: _read_split(src, split, manifest["splits"][split]) for split in SPLITS}
    folder.mkdir(parents=True, exist_ok=True)
    for split, (labels, data) in splits.items():
        _dump(folder / split, {"data": data, "fine_labels": labels.tolist()})
    _dump(folder / "meta", {"fine_label_names": manifest["fine_label_names"]})
    (folder / STAMP).write_text(digest)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="cifar-100-python -> chunks + manifest")
    p.add_argument(
        "--root", type=Path, default=REPO.parent / "shared" / "data", help="holds cifar-100-python"
    )
    p.add_argument("--out", type=Path, default=REPO / ".device_data")
    p.add_argument("--chunk-mib", type=float, default=56)
    p.add_argument("--no-check-sizes", action="store_true", help="accept a cut-down copy (tests, dry runs)")
    c = commands.add_parser("chunks", help="print the chunk paths, one per line")
    c.add_argument("--src", type=Path, default=REPO / ".device_data")
    u = commands.add_parser("unpack", help="chunks + manifest -> cifar-100-python (checked)")
    u.add_argument("--src", type=Path, default=REPO / ".device_data")
    u.add_argument("--dest", type=Path, default=None, help="default: --src")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.root, args.out, args.chunk_mib, check_sizes=not args.no_check_sizes)
            counts = {s: (v["count"], len(v["chunks"])) for s, v in manifest["splits"].items()}
            print(f"packed {counts} (images, chunks) into {args.out}")
        elif args.command == "chunks":
            print("\n".join(str(p) for p in chunk_files(args.src)))
        else:
            print(f"unpacked into {unpack(args.src, args.dest)}")
    except DataError as e:
        sys.exit(f"device_data {args.command}: {e}")


if __name__ == "__main__":
    main()
