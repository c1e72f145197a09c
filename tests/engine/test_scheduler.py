"""Per-iteration LR schedules: the LR of every group at chosen steps equals the formula."""

import math

import pytest
import torch

from visiontune.config import load_config
from visiontune.engine.scheduler import IterationScheduler, ScheduleSpec, build_schedule_spec, lr_factor


def make_optimizer():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.12}], lr=0.1)


def run_to(scheduler, step):
    while scheduler.last_step < step:
        scheduler.step()
    return scheduler.get_last_lr()


def test_warmup_then_cosine_every_group():
    spec = ScheduleSpec("cosine", total_steps=100, steps_per_epoch=10, warmup_steps=10, warmup_factor=0.1,
                        min_factor=0.01)
    optimizer = make_optimizer()
    scheduler = IterationScheduler(optimizer, spec)
    for step in (0, 5, 10, 37, 99, 100):
        lrs = run_to(scheduler, step)
        if step < 10:
            expected = 0.1 + 0.9 * step / 10
        else:
            t = (step - 10) / 90
            expected = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        assert lrs == pytest.approx([0.1 * expected, 0.12 * expected])


def test_multistep_is_retinaface_dynamic_lr():
    config = load_config(None, ["sched.name=multistep", "sched.milestones=[190, 220]", "sched.warmup_epochs=5",
                                "sched.gamma=0.1", "optim.lr=0.001"])
    spec = build_schedule_spec(config.sched, epochs=250, steps_per_epoch=4, base_lr=0.001)
    assert spec.milestones_steps == (760, 880) and spec.warmup_steps == 20
    assert lr_factor(spec, 20) == 1.0
    assert lr_factor(spec, 759) == 1.0
    assert lr_factor(spec, 760) == pytest.approx(0.1)
    assert lr_factor(spec, 880) == pytest.approx(0.01)


def test_step_and_constant():
    spec = ScheduleSpec("step", total_steps=100, steps_per_epoch=10, step_size_steps=30, gamma=0.5)
    assert [lr_factor(spec, s) for s in (0, 29, 30, 60, 95)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    constant = ScheduleSpec("constant", total_steps=10, steps_per_epoch=1, warmup_steps=2, warmup_factor=0.0)
    assert [lr_factor(constant, s) for s in (0, 1, 2, 9)] == [0.0, 0.5, 1.0, 1.0]


def test_state_dict_resumes_curve():
    spec = ScheduleSpec("cosine", total_steps=50, steps_per_epoch=5)
    first = IterationScheduler(make_optimizer(), spec)
    run_to(first, 17)
    second = IterationScheduler(make_optimizer(), spec)
    second.load_state_dict(first.state_dict())
    assert second.get_last_lr() == first.get_last_lr()
