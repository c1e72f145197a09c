from __future__ import annotations

import pytest
import torch

from visiontune.models.retinaface.priors import (
    PriorCache,
    PriorConfig,
    count_priors,
    feature_map_sizes,
    generate_priors,
)


@pytest.mark.parametrize(("size", "expected"), [(640, 16800), (840, 29126)])
def test_prior_count_square(size: int, expected: int) -> None:
    priors = generate_priors((size, size))
    assert priors.shape == (expected, 4)
    assert priors.dtype == torch.float32
    assert count_priors((size, size)) == expected


def test_feature_map_sizes_use_ceil() -> None:
    assert feature_map_sizes((100, 200), (8, 16, 32)) == [(13, 25), (7, 13), (4, 7)]


def test_non_square_prior_values() -> None:
    # height 100, width 200: levels 13x25, 7x13, 4x7 cells with 2 priors each -> 650 + 182 + 56.
    priors = generate_priors((100, 200))
    assert priors.shape == (888, 4)
    # First cell of level 1: centre (0.5 * 8 / 200, 0.5 * 8 / 100), sizes 16 then 32 pixels.
    torch.testing.assert_close(priors[0], torch.tensor([0.02, 0.04, 0.08, 0.16]))
    torch.testing.assert_close(priors[1], torch.tensor([0.02, 0.04, 0.16, 0.32]))
    # Next column comes before the next row.
    torch.testing.assert_close(priors[2], torch.tensor([0.06, 0.04, 0.08, 0.16]))
    torch.testing.assert_close(priors[50], torch.tensor([0.02, 0.12, 0.08, 0.16]))
    # First prior of level 2 (stride 16, min size 64).
    torch.testing.assert_close(priors[650], torch.tensor([0.04, 0.08, 0.32, 0.64]))
    # Last prior: level 3, row 3, column 6, min size 512.
    torch.testing.assert_close(priors[-1], torch.tensor([6.5 * 32 / 200, 3.5 * 32 / 100, 512 / 200, 512 / 100]))


def test_clip_clamps_to_unit_square() -> None:
    priors = generate_priors((100, 200), PriorConfig(clip=True))
    assert float(priors.min()) >= 0.0 and float(priors.max()) <= 1.0
    torch.testing.assert_close(priors[-1], torch.tensor([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(priors[0], torch.tensor([0.02, 0.04, 0.08, 0.16]))


def test_prior_config_validation() -> None:
    with pytest.raises(ValueError, match="one min_sizes entry per step"):
        PriorConfig(min_sizes=((16,), (32,)), steps=(8, 16, 32))
    with pytest.raises(ValueError, match="image_size must be positive"):
        generate_priors((0, 10))


def test_prior_cache_reuses_and_evicts() -> None:
    cache = PriorCache(PriorConfig(), max_entries=2)
    first = cache.get((64, 64), device=torch.device("cpu"))
    assert cache.get((64, 64), device=torch.device("cpu")) is first
    cache.get((32, 64), device=torch.device("cpu"))
    cache.get((64, 64), device=torch.device("cpu"))  # refresh: (32, 64) is now the least recently used
    cache.get((96, 64), device=torch.device("cpu"))
    assert cache.get((64, 64), device=torch.device("cpu")) is first
    assert len(cache) == 2
    assert cache.keys() == [(96, 64, "cpu", torch.float32), (64, 64, "cpu", torch.float32)]  # (32, 64) evicted
    cache.clear()
    assert len(cache) == 0 and cache.keys() == []
