"""Tests for the face transforms: crop, flip, pad, resize (face_geometry), photometric distortion
(face_photometric), the faces (face_instances) and the composed transforms (face_transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visiontune.data.face_geometry import BGR_MEAN, horizontal_flip, pad_to_square, random_square_crop, resize_image
from visiontune.data.face_instances import FaceInstances
from visiontune.data.face_photometric import (
    PhotometricParams,
    apply_photometric,
    bgr_to_hsv,
    hsv_to_bgr,
    sample_photometric_params,
)
from visiontune.data.face_transforms import FaceEvalTransform, RetinaFaceTrainTransform, compute_eval_scale


def make_faces(boxes: list[list[float]], landmarks: list[list[list[float]]] | None = None) -> FaceInstances:
    """Faces with the given xyxy boxes; landmarks default to the box centre repeated (all valid)."""
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if landmarks is None:
        centres = (box_array[:, :2] + box_array[:, 2:]) / 2
        landmark_array = np.repeat(centres[:, None, :], 5, axis=1)
    else:
        landmark_array = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
    return FaceInstances(
        boxes=box_array, landmarks=landmark_array, landmarks_valid=np.ones(len(box_array), dtype=bool)
    )


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# Landmarks of a face in a 100-pixel-wide image: left eye, right eye, nose, left mouth corner, right mouth corner.
FACE_BOX = [10.0, 20.0, 30.0, 50.0]
FACE_LANDMARKS = [[15.0, 30.0], [25.0, 31.0], [20.0, 38.0], [16.0, 45.0], [24.0, 46.0]]
# After a flip (x -> 100 - x) the right eye becomes the left eye, and so on.
FLIPPED_BOX = [70.0, 20.0, 90.0, 50.0]
FLIPPED_LANDMARKS = [[75.0, 31.0], [85.0, 30.0], [80.0, 38.0], [76.0, 46.0], [84.0, 45.0]]


# -------------------------------------------------------------------------------------------------------------------
# Flip
# -------------------------------------------------------------------------------------------------------------------


def test_horizontal_flip_swaps_left_and_right_landmarks_exactly() -> None:
    image = random_image(60, 100)
    faces = make_faces([FACE_BOX], [FACE_LANDMARKS])

    flipped_image, flipped = horizontal_flip(image, faces)

    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped.boxes, np.asarray([FLIPPED_BOX], dtype=np.float32))
    np.testing.assert_array_equal(flipped.landmarks, np.asarray([FLIPPED_LANDMARKS], dtype=np.float32))
    # The input is not modified.
    np.testing.assert_array_equal(faces.landmarks, np.asarray([FACE_LANDMARKS], dtype=np.float32))


def test_horizontal_flip_twice_is_identity() -> None:
    image = random_image(60, 100)
    faces = make_faces([FACE_BOX], [FACE_LANDMARKS])
    image_twice, faces_twice = horizontal_flip(*horizontal_flip(image, faces))
    np.testing.assert_array_equal(image_twice, image)
    np.testing.assert_array_equal(faces_twice.boxes, faces.boxes)
    np.testing.assert_array_equal(faces_twice.landmarks, faces.landmarks)


def test_train_transform_mirror_is_exact_end_to_end() -> None:
    image = random_image(100, 100, seed=3)
    faces = make_faces([FACE_BOX], [FACE_LANDMARKS])
    transform = RetinaFaceTrainTransform(
        image_size=100, crop_scales=(1.0,), distort=False, mirror_probability=1.0, interpolations=("nearest",)
    )

    tensor, target = transform(image, faces, np.random.default_rng(0))

    expected = image[:, ::-1].astype(np.float32) - np.asarray(BGR_MEAN, dtype=np.float32)
    torch.testing.assert_close(tensor, torch.from_numpy(expected.transpose(2, 0, 1).copy()), rtol=0, atol=0)
    torch.testing.assert_close(target["boxes"], torch.tensor([FLIPPED_BOX]), rtol=0, atol=0)
    torch.testing.assert_close(target["landmarks"], torch.tensor([FLIPPED_LANDMARKS]), rtol=0, atol=0)
    assert target["landmarks_valid"].tolist() == [True]


# -------------------------------------------------------------------------------------------------------------------
# Crop
# -------------------------------------------------------------------------------------------------------------------


def test_crop_full_square_keeps_faces_with_centre_strictly_inside_and_clips() -> None:
    image = random_image(100, 100)
    faces = make_faces(
        [
            [10, 10, 30, 40],  # fully inside: kept as is
            [80, 80, 110, 110],  # centre (95, 95) inside: kept, clipped to the image
            [90, 90, 110, 110],  # centre (100, 100) on the border: dropped
            [-10, -10, 4, 4],  # centre (-3, -3) outside: dropped
        ]
    )
    faces.landmarks[1, 0] = [105.0, 85.0]  # outside the crop: clamped to the crop like the reference

    result = random_square_crop(image, faces, np.random.default_rng(0), image_size=640, scales=(1.0,))

    assert result.roi == (0, 0, 100, 100)
    assert result.cropped
    np.testing.assert_array_equal(result.image, image)
    np.testing.assert_array_equal(result.faces.boxes, np.asarray([[10, 10, 30, 40], [80, 80, 100, 100]], np.float32))
    np.testing.assert_array_equal(result.faces.landmarks[1, 0], np.asarray([100.0, 85.0], np.float32))
    np.testing.assert_array_equal(result.faces.landmarks[0], np.full((5, 2), [20.0, 25.0], np.float32))


@pytest.mark.parametrize("seed", range(20))
def test_crop_keeps_exactly_the_faces_whose_centre_is_inside_the_crop(seed: int) -> None:
    image = random_image(120, 90, seed=seed)
    boxes = np.asarray(
        [[5, 5, 25, 30], [40, 50, 60, 75], [70, 90, 88, 118], [0, 100, 30, 120], [30, 10, 50, 28]], np.float32
    )
    faces = make_faces(boxes.tolist())

    result = random_square_crop(image, faces, np.random.default_rng(seed), image_size=640, scales=(0.3, 0.45, 0.6))

    assert result.roi is not None, "these faces always fit some crop within 250 attempts"
    left, top, right, bottom = result.roi
    side = right - left
    assert bottom - top == side and result.image.shape == (side, side, 3)
    np.testing.assert_array_equal(result.image, image[top:bottom, left:right])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centres[:, 0] > left) & (centres[:, 0] < right) & (centres[:, 1] > top) & (centres[:, 1] < bottom)
    fully_inside = (boxes[:, 0] >= left) & (boxes[:, 1] >= top) & (boxes[:, 2] <= right) & (boxes[:, 3] <= bottom)
    assert fully_inside.any()
    expected_boxes = np.clip(boxes[inside] - [left, top, left, top], 0, side)
    np.testing.assert_allclose(result.faces.boxes, expected_boxes, rtol=0, atol=1e-5)
    expected_landmarks = np.clip(faces.landmarks[inside] - [left, top], 0, side)
    np.testing.assert_allclose(result.faces.landmarks, expected_landmarks, rtol=0, atol=1e-5)


def test_crop_falls_back_to_full_image_when_no_face_fits() -> None:
    image = random_image(50, 80)
    faces = make_faces([[0, 0, 80, 50]])  # wider than any square crop of a 50-pixel short side

    result = random_square_crop(image, faces, np.random.default_rng(0), image_size=640)

    assert result.roi is None and not result.cropped
    assert result.image is image
    np.testing.assert_array_equal(result.faces.boxes, faces.boxes)


def test_crop_without_faces_returns_full_image() -> None:
    image = random_image(50, 80)
    result = random_square_crop(image, FaceInstances.empty(), np.random.default_rng(0), image_size=640)
    assert result.roi is None and result.image is image and len(result.faces) == 0


def test_crop_min_face_size_drops_faces_too_small_after_resize() -> None:
    image = random_image(100, 100)
    # At image_size 200 and side 100, the 5-pixel face becomes 10 pixels and the 20-pixel face 40 pixels.
    faces = make_faces([[10, 10, 15, 15], [50, 50, 70, 70]])

    kept_all = random_square_crop(image, faces, np.random.default_rng(0), image_size=200, scales=(1.0,))
    kept_large = random_square_crop(
        image, faces, np.random.default_rng(0), image_size=200, scales=(1.0,), min_face_size=16.0
    )

    assert len(kept_all.faces) == 2
    np.testing.assert_array_equal(kept_large.faces.boxes, np.asarray([[50, 50, 70, 70]], np.float32))


# -------------------------------------------------------------------------------------------------------------------
# Pad and resize
# -------------------------------------------------------------------------------------------------------------------


def test_pad_to_square_keeps_image_top_left_and_fills_mean() -> None:
    image = random_image(3, 5)
    padded = pad_to_square(image)
    assert padded.shape == (5, 5, 3) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[:3], image)
    np.testing.assert_array_equal(padded[3:], np.broadcast_to(np.asarray([104, 117, 123], np.uint8), (2, 5, 3)))


def test_resize_image_rejects_unknown_interpolation() -> None:
    with pytest.raises(ValueError, match=r"unknown interpolation 'cubic-ish'; expected one of \['area', "):
        resize_image(random_image(4, 4), size=(2, 2), interpolation="cubic-ish")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "area", "nearest", "lanczos"])
def test_resize_image_keeps_constant_colour(interpolation: str) -> None:
    image = np.full((10, 14, 3), [10, 120, 250], dtype=np.uint8)
    resized = resize_image(image, size=(7, 5), interpolation=interpolation)
    assert resized.shape == (7, 5, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, np.full((7, 5, 3), [10, 120, 250], dtype=np.uint8))


# -------------------------------------------------------------------------------------------------------------------
# Photometric distortion
# -------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bgr", "hsv"),
    [
        ([0, 0, 255], [0.0, 1.0, 255.0]),  # red
        ([0, 255, 0], [120.0, 1.0, 255.0]),  # green
        ([255, 0, 0], [240.0, 1.0, 255.0]),  # blue
        ([0, 255, 255], [60.0, 1.0, 255.0]),  # yellow
        ([128, 0, 128], [300.0, 1.0, 128.0]),  # purple
        ([50, 100, 200], [20.0, 0.75, 200.0]),  # hue = 60 * (100 - 50) / 150
        ([90, 90, 90], [0.0, 0.0, 90.0]),  # grey
        ([0, 0, 0], [0.0, 0.0, 0.0]),  # black
    ],
)
def test_bgr_to_hsv_known_values(bgr: list[int], hsv: list[float]) -> None:
    np.testing.assert_allclose(bgr_to_hsv(np.asarray([[bgr]], np.uint8))[0, 0], hsv, rtol=0, atol=1e-4)
    np.testing.assert_allclose(hsv_to_bgr(np.asarray([[hsv]], np.float32))[0, 0], bgr, rtol=0, atol=1e-3)


def test_hsv_round_trip_on_random_colours() -> None:
    image = random_image(32, 32, seed=5)
    np.testing.assert_allclose(hsv_to_bgr(bgr_to_hsv(image)), image.astype(np.float32), rtol=0, atol=1e-3)


def test_apply_photometric_steps_exact() -> None:
    grey = np.full((2, 2, 3), 100, dtype=np.uint8)
    red = np.full((1, 1, 3), [0, 0, 255], dtype=np.uint8)
    colour = np.full((1, 1, 3), [50, 100, 200], dtype=np.uint8)

    assert apply_photometric(grey, PhotometricParams()).tolist() == grey.tolist()
    assert apply_photometric(grey, PhotometricParams(brightness_delta=10.4))[0, 0].tolist() == [110, 110, 110]
    assert apply_photometric(grey, PhotometricParams(brightness_delta=-200.0))[0, 0].tolist() == [0, 0, 0]
    assert apply_photometric(grey, PhotometricParams(contrast_factor=3.0))[0, 0].tolist() == [255, 255, 255]
    assert apply_photometric(red, PhotometricParams(hue_shift_degrees=120.0))[0, 0].tolist() == [0, 255, 0]
    assert apply_photometric(red, PhotometricParams(hue_shift_degrees=-120.0))[0, 0].tolist() == [255, 0, 0]
    # Saturation 0 gives grey at the value (maximum channel); 0.5 halves the distance to it.
    assert apply_photometric(colour, PhotometricParams(saturation_factor=0.0))[0, 0].tolist() == [200, 200, 200]
    assert apply_photometric(colour, PhotometricParams(saturation_factor=0.5))[0, 0].tolist() == [125, 150, 200]


def test_apply_photometric_contrast_order_matters_like_reference() -> None:
    image = np.full((1, 1, 3), [0, 0, 200], dtype=np.uint8)
    first = PhotometricParams(contrast_factor=1.5, saturation_factor=0.5, contrast_last=False)
    last = PhotometricParams(contrast_factor=1.5, saturation_factor=0.5, contrast_last=True)
    # Contrast first: (0, 0, 300 -> 255), then saturation 0.5 -> (127.5, 127.5, 255).
    assert apply_photometric(image, first)[0, 0].tolist() == [128, 128, 255]
    # Saturation first: (100, 100, 200), then contrast 1.5 -> (150, 150, 300 -> 255).
    assert apply_photometric(image, last)[0, 0].tolist() == [150, 150, 255]


def test_sample_photometric_params_ranges_and_probabilities() -> None:
    generator = np.random.default_rng(0)
    draws = [sample_photometric_params(generator) for _ in range(2000)]

    brightness = [draw.brightness_delta for draw in draws if draw.brightness_delta is not None]
    contrast = [draw.contrast_factor for draw in draws if draw.contrast_factor is not None]
    saturation = [draw.saturation_factor for draw in draws if draw.saturation_factor is not None]
    hue = [draw.hue_shift_degrees for draw in draws if draw.hue_shift_degrees is not None]
    assert all(-32 <= value <= 32 for value in brightness)
    assert all(0.5 <= value <= 1.5 for value in contrast + saturation)
    assert all(value % 2 == 0 and -36 <= value <= 36 for value in hue)
    assert {-36.0, 36.0} <= set(hue)
    for values in (brightness, contrast, saturation, hue):
        assert 0.45 < len(values) / len(draws) < 0.55
    assert 0.45 < np.mean([draw.contrast_last for draw in draws]) < 0.55


# -------------------------------------------------------------------------------------------------------------------
# Composed transforms
# -------------------------------------------------------------------------------------------------------------------


def test_train_transform_output_shapes_and_dtypes() -> None:
    image = random_image(90, 150, seed=1)
    faces = make_faces([[10, 20, 40, 60], [100, 30, 130, 70]])
    faces.landmarks_valid[1] = False
    transform = RetinaFaceTrainTransform(image_size=64)

    for seed in range(10):
        tensor, target = transform(image, faces, np.random.default_rng(seed))
        assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
        assert set(target) == {"boxes", "landmarks", "landmarks_valid"}
        num_faces = target["boxes"].shape[0]
        assert 1 <= num_faces <= 2
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (num_faces, 4)
        assert target["landmarks"].dtype == torch.float32 and target["landmarks"].shape == (num_faces, 5, 2)
        assert target["landmarks_valid"].dtype == torch.bool and target["landmarks_valid"].shape == (num_faces,)
        boxes = target["boxes"]
        assert bool((boxes[:, 2:] > boxes[:, :2]).all())
        assert bool((boxes >= -1e-4).all()) and bool((boxes <= 64 + 1e-4).all())
        invalid = ~target["landmarks_valid"]
        assert bool((target["landmarks"][invalid] == -1).all())
    # The input is not modified.
    np.testing.assert_array_equal(faces.boxes, np.asarray([[10, 20, 40, 60], [100, 30, 130, 70]], np.float32))


def test_train_transform_is_reproducible_for_the_same_seed() -> None:
    image = random_image(90, 150, seed=1)
    faces = make_faces([[10, 20, 40, 60], [100, 30, 130, 70]])
    transform = RetinaFaceTrainTransform(image_size=64)

    first = [transform(image, faces, np.random.default_rng(seed)) for seed in range(5)]
    second = [transform(image, faces, np.random.default_rng(seed)) for seed in range(5)]

    for (tensor_a, target_a), (tensor_b, target_b) in zip(first, second):
        torch.testing.assert_close(tensor_a, tensor_b, rtol=0, atol=0)
        for key in target_a:
            torch.testing.assert_close(target_a[key], target_b[key], rtol=0, atol=0)
    assert not torch.equal(first[0][0], first[1][0])


def test_train_transform_zero_faces_pads_the_full_image() -> None:
    image = random_image(30, 60, seed=2)
    transform = RetinaFaceTrainTransform(
        image_size=60, distort=False, mirror_probability=0.0, interpolations=("nearest",)
    )

    tensor, target = transform(image, FaceInstances.empty(), np.random.default_rng(0))

    assert target["boxes"].shape == (0, 4) and target["landmarks"].shape == (0, 5, 2)
    expected = pad_to_square(image).astype(np.float32) - np.asarray(BGR_MEAN, np.float32)
    torch.testing.assert_close(tensor, torch.from_numpy(expected.transpose(2, 0, 1).copy()), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"image_size": 0}, r"image_size must be positive, got 0"),
        ({"crop_scales": (0.5, 1.5)}, r"crop_scales must be .* values in \(0, 1\], got \[0.5, 1.5\]"),
        ({"mirror_probability": 2.0}, r"mirror_probability must be in \[0, 1\], got 2.0"),
        ({"interpolations": ("bilinear", "cubic")}, r"unknown interpolations \['cubic'\]"),
    ],
)
def test_train_transform_rejects_bad_arguments(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        RetinaFaceTrainTransform(**kwargs)


@pytest.mark.parametrize(
    ("height", "width", "target_size", "max_size", "expected"),
    [
        (40, 60, None, 2150, 1.0),
        (40, 60, 80, 2150, 2.0),  # short side 40 -> 80
        (40, 60, 80, 100, 100 / 60),  # 2 * 60 = 120 > 100: long side capped at 100
        (1000, 700, 1600, 2150, 2150 / 1000),  # 1600 / 700 * 1000 = 2286 > 2150
        (768, 1024, 1600, 2150, 1600 / 768),  # 1600 / 768 * 1024 = 2133 <= 2150
        (1000, 1500, 1600, 2150, 2150 / 1500),
        (1000, 1340, 1600, 2150, 1.6),  # 1.6 * 1340 = 2144 <= 2150
    ],
)
def test_compute_eval_scale(height: int, width: int, target_size: int | None, max_size: int, expected: float) -> None:
    assert compute_eval_scale(height, width, target_size=target_size, max_size=max_size) == pytest.approx(expected)


def test_eval_transform_rescales_image_and_targets() -> None:
    image = random_image(40, 60)
    faces = make_faces([[10, 5, 20, 25]])
    tensor, target = FaceEvalTransform(target_size=80, max_size=100)(image, faces, None)
    scale = 100 / 60
    assert target["scale"] == pytest.approx(scale)
    assert tensor.shape == (3, round(40 * scale), 100) and tensor.dtype == torch.float32
    torch.testing.assert_close(target["boxes"], torch.tensor([[10, 5, 20, 25]], dtype=torch.float32) * scale)


def test_eval_transform_original_size_is_exact() -> None:
    image = random_image(7, 9)
    faces = make_faces([[1, 2, 3, 4]])
    tensor, target = FaceEvalTransform()(image, faces, None)
    expected = image.astype(np.float32) - np.asarray(BGR_MEAN, np.float32)
    torch.testing.assert_close(tensor, torch.from_numpy(expected.transpose(2, 0, 1).copy()), rtol=0, atol=0)
    assert target["scale"] == 1.0
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 2.0, 3.0, 4.0]]), rtol=0, atol=0)
