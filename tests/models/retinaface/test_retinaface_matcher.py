from __future__ import annotations

import torch

from visiontune.models.retinaface.matcher import BACKGROUND, match_priors

# Priors (cx, cy, w, h): four quadrants of the unit square and a small central one.
PRIORS = torch.tensor(
    [
        [0.25, 0.25, 0.5, 0.5],  # p0 = [0, 0, 0.5, 0.5]
        [0.75, 0.25, 0.5, 0.5],  # p1 = [0.5, 0, 1, 0.5]
        [0.25, 0.75, 0.5, 0.5],  # p2 = [0, 0.5, 0.5, 1]
        [0.75, 0.75, 0.5, 0.5],  # p3 = [0.5, 0.5, 1, 1]
        [0.5, 0.5, 0.1, 0.1],  # p4 = [0.45, 0.45, 0.55, 0.55]
    ]
)
FACES = torch.tensor(
    [
        [0.0, 0.0, 0.5, 0.5],  # g0: IoU 1.0 with p0
        [0.5, 0.5, 0.8, 0.8],  # g1: IoU 0.09 / 0.25 = 0.36 with p3 (>= 0.35)
        [0.42, 0.42, 0.52, 0.52],  # g2: IoU 0.0049 / 0.0151 = 0.3245 with p4 (forced: >= 0.2, < 0.35)
        [0.9, 0.05, 0.92, 0.07],  # g3: IoU 0.0004 / 0.25 = 0.0016 with p1 (below 0.2: no forced match)
    ]
)


def test_threshold_and_forced_match() -> None:
    matched = match_priors(FACES, PRIORS)
    assert matched.tolist() == [0, BACKGROUND, BACKGROUND, 1, 2]


def test_forced_match_for_every_face_when_minimum_is_zero() -> None:
    matched = match_priors(FACES, PRIORS, min_forced_match_iou=0.0)
    assert matched.tolist() == [0, 3, BACKGROUND, 1, 2]


def test_forced_match_survives_a_higher_threshold() -> None:
    # At 0.4 g1 no longer passes the IoU test with p3, but still takes it as its best prior.
    assert match_priors(FACES, PRIORS, iou_threshold=0.4).tolist() == [0, BACKGROUND, BACKGROUND, 1, 2]
    no_forcing = match_priors(FACES, PRIORS, iou_threshold=0.4, min_forced_match_iou=float("inf"))
    assert no_forcing.tolist() == [0, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND]


def test_shared_best_prior_goes_to_the_last_face() -> None:
    # g0 (IoU 1.0) and g4 (IoU 0.64) both have p0 as best prior; as in the reference the later face keeps it.
    faces = torch.cat([FACES[:1], torch.tensor([[0.0, 0.0, 0.4, 0.4]])])
    assert match_priors(faces, PRIORS).tolist() == [1, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND]


def test_no_faces() -> None:
    matched = match_priors(torch.zeros(0, 4), PRIORS)
    assert matched.dtype == torch.int64
    assert matched.tolist() == [BACKGROUND] * 5
