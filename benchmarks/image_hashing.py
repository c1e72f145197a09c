"""Duplicate-check hashing speed: SHA-1 + pHash (:func:`visiontune.data.duplicates.hash_images`) of generated
640x480 JPEGs with 2 threads, then the same files again through the hash cache. Also prints the pHash distances of
0.5x-resized, JPEG-quality-70 copies and of different images (what ``NEAR_DUPLICATE_BITS`` separates).

    python benchmarks/image_hashing.py [--images 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from visiontune.data.duplicates import NEAR_DUPLICATE_BITS, HashCache, hamming_distances, hash_images
from visiontune.data.synthetic import SHAPES, render_shape_image


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` photo-like 640x480 JPEGs (quality 90, about 100 kB as a camera photo of that size): a shape on a
    textured gradient background, plus sensor-like noise (which makes the JPEG's entropy decoding as costly as a
    photo's)."""
    from PIL import Image

    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        image = render_shape_image(list(SHAPES)[index % len(SHAPES)], image_size=240, rng=rng).resize((640, 480))
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(480, 640, 3), dtype=np.int16)
        paths.append(folder / f"{index:05d}.jpg")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def copy_distances(folder: Path, paths: list[Path], count: int) -> tuple[np.ndarray, np.ndarray]:
    """pHash distances of ``count`` originals to their 0.5x JPEG-70 copies, and between different originals."""
    from PIL import Image

    copies = []
    for path in paths[:count]:
        with Image.open(path) as image:
            copies.append(folder / f"copy_{path.name}")
            image.resize((320, 240)).save(copies[-1], quality=70)
    hashes = hash_images(paths[:count] + copies)
    originals = np.array([hashes[path][1] for path in paths[:count]], dtype=np.uint64)
    resized = np.array([hashes[path][1] for path in copies], dtype=np.uint64)
    distances = hamming_distances(originals, resized)
    return np.diag(distances), hamming_distances(originals, originals)[~np.eye(count, dtype=bool)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        paths = write_images(Path(folder), args.images)
        size = sum(path.stat().st_size for path in paths) / len(paths) / 1000
        print(f"wrote {len(paths)} 640x480 JPEGs ({size:.0f} kB each) in {time.perf_counter() - started:.1f} s")
        cache = HashCache(Path(folder) / "cache" / "image_hashes.json")
        started = time.perf_counter()
        hash_images(paths, cache=cache, num_workers=args.workers)
        seconds = time.perf_counter() - started
        print(f"hashed {cache.computed} images in {seconds:.2f} s: {cache.computed / seconds:.0f} images/s "
              f"({args.workers} threads, SHA-1 + pHash, JPEG draft decoding)")
        cached = HashCache(cache.path)
        started = time.perf_counter()
        hash_images(paths, cache=cached, num_workers=args.workers)
        print(f"again through the cache: {cached.computed} hashed, {time.perf_counter() - started:.2f} s")
        same, different = copy_distances(Path(folder), paths, 100)
        print(f"pHash distance, 0.5x + JPEG 70 copies: max {same.max()} (mean {same.mean():.1f}); different images: "
              f"min {different.min()}, median {np.median(different):.0f}; threshold {NEAR_DUPLICATE_BITS} of 64 bits")


if __name__ == "__main__":
    main()
