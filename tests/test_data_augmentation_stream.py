"""data.aug_seed: each training view is a function of (aug_seed, epoch, image, view) alone, so every run of a
sweep sees the same augmented images, whatever its seed, method, loader workers or DDP rank."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from helpers import compose_config, load_benchmark, write_fake_cifar
from pckd_lightning.data import CIFAR100DataModule
from pckd_lightning.data.augmentation import ViewSeeds, view_seed
from pckd_lightning.data.gpu_resident import GPUResidentCIFAR100DataModule
from pckd_lightning.errors import ConfigError

IMAGES = 24


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(folder, n=200)
    return folder


def data(root, **options) -> CIFAR100DataModule:
    options = {"batch_size": 8, "aug_seed": 5, "seed": 0, "check_sizes": False} | options
    module = CIFAR100DataModule(root, **options)
    module.setup("fit")
    return module


def epoch_images(module: CIFAR100DataModule, epoch: int, **wrapper) -> dict[int, torch.Tensor]:
    """Every training image the loader gives in ``epoch``, by dataset index (of one rank with ``wrapper``)."""
    loader = module.train_dataloader()
    sampler = loader.sampler
    if wrapper:  # what Lightning puts in place of a custom sampler under DDP
        sampler = DistributedSamplerWrapper(sampler, **wrapper)
        loader = torch.utils.data.DataLoader(
            loader.dataset, batch_size=8, sampler=sampler, num_workers=loader.num_workers
        )
    sampler.set_epoch(epoch)
    out = {}
    for x, _, idx in loader:
        out |= {int(i): v for i, v in zip(idx, x, strict=True)}
    return out


def same(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)


def test_the_images_of_an_epoch_do_not_depend_on_the_runs_seed_but_on_aug_seed_and_epoch(root):
    base = epoch_images(data(root, seed=0), epoch=1)
    assert len(base) == 200
    assert same(base, epoch_images(data(root, seed=1), epoch=1))  # another student seed, another order
    assert not same(base, epoch_images(data(root, seed=0, aug_seed=6), epoch=1))
    assert not same(base, epoch_images(data(root, seed=0), epoch=2))


def test_the_images_do_not_depend_on_the_loader_workers(root):
    assert same(epoch_images(data(root), epoch=3), epoch_images(data(root, num_workers=2), epoch=3))


def test_two_ranks_together_see_the_images_of_one_process(root):
    """Under DDP (Lightning's DistributedSamplerWrapper) each rank draws its share from the same streams."""
    single = epoch_images(data(root), epoch=2)
    ranks = [epoch_images(data(root), epoch=2, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    assert ranks[0].keys().isdisjoint(ranks[1].keys())
    assert same(single, ranks[0] | ranks[1])


def test_view_0_of_every_recipe_is_the_single_view_image(root):
    """A KD run's image is view 0 of a PCKD run's (before its rotation: 0°) and MLKD's weak view."""
    kd = data(root).train_set
    pckd = data(root, views=4).train_set
    mlkd = data(root, views=2, view_recipe="weak_strong").train_set
    for i in range(IMAGES):
        image = kd[(i, 7)][0]
        assert torch.equal(pckd[(i, 7)][0][0], image)
        assert torch.equal(mlkd[(i, 7)][0][0], image)
        assert not torch.equal(pckd[(i, 7)][0][1], torch.rot90(image, 1, dims=(1, 2)))  # its own crop


def test_without_aug_seed_the_views_come_from_the_workers_generator(root):
    dataset = data(root, aug_seed=None).train_set
    torch.manual_seed(0)
    a = dataset[(3, 1)][0]
    torch.manual_seed(0)
    assert torch.equal(dataset[(3, 1)][0], a)
    torch.manual_seed(1)
    draws = [dataset[(3, 1)][0] for _ in range(8)]
    assert any(not torch.equal(d, draws[0]) for d in draws)


def test_the_stream_leaves_the_global_generator_as_it_was(root):
    dataset = data(root, views=4).train_set
    torch.manual_seed(0)
    state = torch.get_rng_state()
    dataset[(0, 0)]
    assert torch.equal(torch.get_rng_state(), state)


def test_view_seeds_mix_all_four_numbers():
    seeds = {view_seed(a, e, i, v) for a in (0, 1) for e in (0, 1) for i in (0, 1) for v in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
    with ViewSeeds(1, 2, 3).view(0):
        first = torch.rand(3)
    with ViewSeeds(1, 2, 3).view(0):
        assert torch.equal(torch.rand(3), first)


def test_the_default_stream_follows_the_runs_seed_and_a_sweep_sets_one(tmp_path):
    assert compose_config(["seed=4"]).data.aug_seed == 4
    assert compose_config(["seed=4", "data.aug_seed=9"]).data.aug_seed == 9
    assert compose_config(["data=cifar100", "seed=4"]).data.aug_seed == 4


def test_the_device_resident_path_refuses_a_stream_it_cannot_draw(root):
    with pytest.raises(ConfigError, match=r"data\.aug_seed=3.*data=cifar100.*aug_seed=null"):
        GPUResidentCIFAR100DataModule(root, aug_seed=3, check_sizes=False)
    assert compose_config(["data=cifar100_gpu"]).data.aug_seed is None


def test_the_stream_benchmark_plans_each_run_once_and_pairs_each_arm_by_seed(tmp_path):
    """benchmarks/aug_stream.py: the shared arm's runs all draw stream 0, the independent arm's two rows never
    share a stream, a run two arms need is trained once, and the table's Δ and sd are each arm's own pairs."""
    bench = load_benchmark("aug_stream", "aug_stream")
    runs = bench.planned_runs()
    assert len(runs) == len(set(runs)) == 13  # 6 per-seed, 4 more shared (seed 0 is both), 3 independent
    for seed in bench.SEEDS:
        assert bench.ARMS["independent"]("kd", seed) != bench.ARMS["independent"]("ce1_kd1", seed)
        assert {bench.ARMS["shared"](row, seed) for row in bench.ROWS} == {0}
    best = {}  # (row, aug_seed, seed) -> best top-1, made up so that each arm's Δs are known
    for seed, row, aug_seed in runs:
        value = 50.0 + seed + (aug_seed % 7) * (row == "ce1_kd1")
        best[(row, aug_seed, seed)] = value
        folder = bench.run_folder(tmp_path, row, aug_seed, seed)
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"best_top1": value, "last_top1": value - 1}))
    markdown, numbers = bench.table(tmp_path)
    # per seed: shared 0, 0, 0; per_seed 0, 1, 2; independent 1000 % 7 = 6, 1001 % 7 = 0, 1002 % 7 = 1
    assert numbers["shared"]["best_top1"]["deltas"] == [0.0, 0.0, 0.0]
    assert numbers["per_seed"]["best_top1"]["deltas"] == [0.0, 1.0, 2.0]
    assert numbers["independent"]["last_top1"]["deltas"] == [6.0, 0.0, 1.0]
    assert numbers["per_seed"]["best_top1"]["sd"] == pytest.approx(1.0)
    ratio = numbers["per_seed"]["variance_ratio_best"]["ratio"]
    assert ratio == pytest.approx(1.0 / statistics.variance([6.0, 0.0, 1.0]))
    assert "| `independent` | +6.00, +0.00, +1.00 |" in markdown
