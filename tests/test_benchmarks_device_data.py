"""benchmarks/device_data.py: CIFAR-100 packed into chunks and unpacked bit-exact, bad chunks refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from helpers import load_benchmark, write_fake_cifar
from pckd_lightning.data.cifar100 import read_cifar100, read_cifar100_class_names
from pckd_lightning.errors import DataError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def device_data() -> ModuleType:
    return load_benchmark("device_data")


@pytest.fixture
def packed(tmp_path: Path, device_data: ModuleType) -> tuple[Path, Path]:
    """A fake CIFAR-100 (230 images per split) packed into chunks of ~64 records: several per split."""
    write_fake_cifar(tmp_path / "src", n=230)
    out = tmp_path / "packed"
    device_data.pack(tmp_path / "src", out, chunk_mib=64 * device_data.RECORD / 2**20, check_sizes=False)
    return tmp_path / "src", out


def test_pack_writes_bounded_chunks_with_counts_and_hashes(packed, device_data):
    _, out = packed
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "test"):
        chunks = manifest["splits"][split]["chunks"]
        assert [c["count"] for c in chunks] == [64, 64, 64, 38]
        for c in chunks:
            assert (out / c["file"]).stat().st_size == c["count"] * device_data.RECORD
    assert [p.name for p in device_data.chunk_files(out)][:2] == ["train.000.bin", "train.001.bin"]


def test_unpack_round_trip_is_bit_exact_and_readable_by_the_data_module(packed, device_data, tmp_path):
    src, out = packed
    folder = device_data.unpack(out, tmp_path / "dest")
    assert folder == tmp_path / "dest" / "cifar-100-python"
    for split in ("train", "test"):
        images, labels = read_cifar100(tmp_path / "dest", split, check_sizes=False)
        ref_images, ref_labels = read_cifar100(src, split, check_sizes=False)
        assert images.dtype == ref_images.dtype and np.array_equal(images, ref_images)
        assert np.array_equal(labels, ref_labels)
    assert read_cifar100_class_names(tmp_path / "dest") == read_cifar100_class_names(src)


def test_unpack_refuses_a_missing_chunk_by_name(packed, device_data):
    _, out = packed
    (out / "train.002.bin").unlink()
    with pytest.raises(DataError, match=r"missing chunk .*train\.002\.bin"):
        device_data.unpack(out)
    assert not (out / "cifar-100-python").exists()


def test_unpack_refuses_a_corrupt_chunk_by_name(packed, device_data):
    _, out = packed
    chunk = out / "test.001.bin"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 1  # one flipped bit, same size
    chunk.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"corrupt chunk .*test\.001\.bin"):
        device_data.unpack(out)


def test_a_second_unpack_of_the_same_manifest_is_skipped(packed, device_data):
    _, out = packed
    folder = device_data.unpack(out)
    (out / "train.000.bin").unlink()  # would fail if the chunks were read again
    assert device_data.unpack(out) == folder


def test_the_cli_exits_with_the_problem_when_the_manifest_is_missing(device_data, tmp_path):
    with pytest.raises(SystemExit, match=r"no .*manifest\.json.*pack"):
        device_data.main(["unpack", "--src", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.cifar
def test_real_cifar100_packs_into_four_chunks_under_56_mib(device_data, cifar_root, tmp_path):
    manifest = device_data.pack(cifar_root, tmp_path / "packed")
    sizes = [p.stat().st_size for p in device_data.chunk_files(tmp_path / "packed")]
    assert len(sizes) == 4 and max(sizes) <= 56 * 2**20
    assert manifest["splits"]["train"]["count"] == 50_000
    device_data.unpack(tmp_path / "packed")
    images, _ = read_cifar100(tmp_path / "packed", "train")
    assert np.array_equal(images, read_cifar100(cifar_root, "train")[0])
