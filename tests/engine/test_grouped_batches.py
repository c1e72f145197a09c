"""Training batches drawn from one group (e.g. Mask R-CNN's aspect-ratio bins), resumable mid-epoch."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import train
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.loaders import GroupedTrainBatchSampler, SeededDataset, TrainSampler, sample_seed
from visiontune.engine.trainer import Trainer
from visiontune.tasks.classification import ClassificationTask


def grouped(num_samples, group_ids, *, batch_size, rank=0, world_size=1, seed=5):
    sampler = TrainSampler(num_samples, seed=seed, rank=rank, world_size=world_size)
    return sampler, GroupedTrainBatchSampler(sampler, group_ids, batch_size=batch_size)


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_batches_are_single_group_when_possible_and_keep_the_count(rank, world_size):
    group_ids = [0] * 23 + [1] * 17 + [2] * 10  # uneven groups, positions shuffled by the sampler
    sampler, batches = grouped(50, group_ids, batch_size=4, rank=rank, world_size=world_size)
    sampler.set_epoch(3)
    epoch = batches.epoch_batches()
    assert len(epoch) == len(batches) == sampler.per_rank // 4  # as drop_last without grouping
    assert all(len(batch) == 4 for batch in epoch)
    used = [index for batch in epoch for index in batch]
    assert len(used) == len(set(used)) and set(used) <= set(sampler.order())  # no sample twice (no padding here)
    single = [len({group_ids[index] for index in batch}) == 1 for batch in epoch]
    # at most 3 x 3 samples stay in partly filled group buffers: at most 2 mixed batches, and they come last
    assert sum(single) >= len(epoch) - 2 and single == sorted(single, reverse=True)
    yielded = list(batches)
    assert yielded == [[(sample_seed(5, 3, index), index) for index in batch] for batch in epoch]


def test_batches_depend_on_seed_epoch_and_rank_and_resume_skips_whole_batches():
    group_ids = [index % 3 for index in range(40)]
    sampler, batches = grouped(40, group_ids, batch_size=4)
    sampler.set_epoch(1)
    first = list(batches)
    assert list(batches) == first  # deterministic
    sampler.set_epoch(2)
    assert list(batches) != first
    sampler.set_epoch(1, start=3 * 4)  # three batches done before the interruption
    assert list(batches) == first[3:] and len(batches) == len(first) - 3
    sampler.set_epoch(1, start=3)
    with pytest.raises(ValueError, match="whole batches"):
        list(batches)
    with pytest.raises(ValueError, match="3 group ids for a dataset of 40 samples"):
        GroupedTrainBatchSampler(sampler, [0, 1, 2], batch_size=4)


def parity_groups(monkeypatch):
    monkeypatch.setattr(ClassificationTask, "train_group_ids",
                        lambda self, dataset: [index % 2 for index in range(len(dataset))])


def record_samples(monkeypatch):
    seen = []
    load = SeededDataset.__getitem__
    monkeypatch.setattr(SeededDataset, "__getitem__", lambda self, item: seen.append(item[1]) or load(self, item))
    return seen


class StopAfterStep(HookBase):
    def __init__(self, step):
        self.step = step

    def after_step(self, trainer, losses):
        if trainer.state.step == self.step:
            trainer.stop.request("stopped by test")


def test_training_loader_groups_batches_and_resumes_exactly(tiny_config, monkeypatch):
    parity_groups(monkeypatch)
    seen = record_samples(monkeypatch)
    straight = train(tiny_config("name=straight"))
    straight_seen = list(seen)
    # 18 images in 2 groups of 9, batch 4: 4 single-group batches per epoch (the count without grouping)
    assert load_checkpoint(straight.run_dir / "last.pt")["step"] == 8 and len(straight_seen) == 8 * 4
    batches = [straight_seen[first:first + 4] for first in range(0, len(straight_seen), 4)]
    assert all(len({index % 2 for index in batch}) == 1 for batch in batches)
    seen.clear()
    stopped = Trainer(tiny_config("name=split"), hooks=[StopAfterStep(6)])
    stopped.fit()
    assert load_checkpoint(stopped.run_dir / "last.pt")["batch_in_epoch"] == 2
    resumed = train(tiny_config(f"resume={stopped.run_dir / 'last.pt'}"))
    assert seen == straight_seen  # the resume skipped exactly the two batches of epoch 2 already trained
    final, reference = (load_checkpoint(run / "last.pt")["model"] for run in (resumed.run_dir, straight.run_dir))
    assert final.keys() == reference.keys() and all(torch.equal(final[key], reference[key]) for key in reference)


@pytest.mark.parametrize("grouping", [True, False])
def test_instance_segmentation_training_loader_groups_by_aspect_ratio(tmp_path, grouping):
    from visiontune.config import load_config
    from visiontune.data.synthetic_coco import make_synthetic_coco
    from visiontune.engine.build import build_train_loader
    from visiontune.tasks import create_task
    from visiontune.utils.comm import DistInfo

    root = tmp_path / "coco"
    make_synthetic_coco(root, num_images=6, split="train", seed=0)
    config = load_config(None, ["task=instance_segmentation", "device=cpu", "data.format=coco", f"data.root={root}",
                                "data.train_split=annotations/instances_train.json", "data.images_dir=train",
                                "data.val_split=null", "data.num_workers=0", "data.batch_size=2",
                                f"segmentation.aspect_ratio_grouping={str(grouping).lower()}"])
    task = create_task(config)
    dataset = task.build_dataset(config.data.train_split, train=True)
    loader, sampler = build_train_loader(task, dataset, config, DistInfo())
    if not grouping:
        assert not isinstance(loader.batch_sampler, GroupedTrainBatchSampler) and loader.drop_last
        return
    assert isinstance(loader.batch_sampler, GroupedTrainBatchSampler)
    assert loader.batch_sampler.group_ids == task.train_group_ids(dataset)
    sampler.set_epoch(0)
    images, _ = next(iter(loader))
    assert len(loader) == len(dataset) // 2 and len(images) == 2
