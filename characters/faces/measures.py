"""Numbers measured on one photo: sharpness, exposure, uniformity, perceptual hash, pose, background.

Pure numpy on small arrays, so each costs a few milliseconds. Thresholds live in `photo.py`.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# Luma weights of ITU-R BT.601, as Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
HASH_SIDE = 32  # pHash: DCT of a 32x32 grey image, keep the 8x8 lowest frequencies
HASH_KEPT = 8


def grey(pixels: np.ndarray) -> np.ndarray:
    """Luma as float32 in 0..255 for an RGB array (a grey array is returned as float)."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    return pixels[..., :3].astype(np.float32) @ _LUMA


def laplacian_variance(grey_pixels: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when edges are soft (out of focus, motion blur).

    Measured on the aligned 150 px face chip, so a face is judged at one scale whatever its size in
    the photo (Pech-Pacheco et al., 2000, the measure OpenCV users call `cv2.Laplacian(...).var()`).
    """
    g = grey_pixels
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def exposure(grey_pixels: np.ndarray) -> tuple[float, float, float]:
    """Mean luma, and the shares of pixels crushed to black (<= 8) and blown to white (>= 247)."""
    total = grey_pixels.size or 1
    return (
        float(grey_pixels.mean()),
        float((grey_pixels <= 8).sum() / total),
        float((grey_pixels >= 247).sum() / total),
    )


def spread(pixels: np.ndarray) -> float:
    """Standard deviation over all channels: near 0 for a blank or one-colour image."""
    return float(pixels.astype(np.float32).std())


def perceptual_hash(grey_pixels: np.ndarray) -> str:
    """64-bit pHash as 16 hex digits: the signs of the lowest 8x8 DCT frequencies against their median.

    Robust to scaling, recompression and small colour changes; two photos within a Hamming distance of
    about 10 are the same picture (Zauner, "Implementation and Benchmarking of Perceptual Image Hash
    Functions", 2010). The caller passes the grey image already resized to 32x32.
    """
    basis = _dct_basis(HASH_SIDE)
    frequencies = basis @ grey_pixels.astype(np.float64) @ basis.T
    low = frequencies[:HASH_KEPT, :HASH_KEPT].flatten()
    bits = low > np.median(low[1:])  # the DC term says only how bright the picture is
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hash_distance(first: str, second: str) -> int:
    """Bits that differ between two 16-hex-digit hashes."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


def yaw(landmarks: tuple[tuple[int, int], ...]) -> float:
    """How far the face is turned, from dlib's 5 points (eye corners 0-3, nose base 4).

    The nose's sideways offset from the middle of the eyes, in eye-widths: about 0 facing the camera,
    beyond ±0.25 a clear three-quarter view. A rough pose cue, not a head-pose estimate.
    """
    eyes = np.array(landmarks[:4], dtype=np.float32)
    nose = np.array(landmarks[4], dtype=np.float32)
    centre = eyes.mean(axis=0)
    span = float(np.linalg.norm(eyes[:2].mean(axis=0) - eyes[2:].mean(axis=0))) or 1.0
    return float((nose[0] - centre[0]) / span)


def background_signature(pixels: np.ndarray, face_box: tuple[int, int, int, int] | None) -> list[float]:
    """Mean colour of each cell of a 4x4 grid, face cells left out (as -1): what surrounds the person.

    Two photos whose known cells differ little on average were taken against the same background.
    """
    height, width = pixels.shape[:2]
    cells: list[float] = []
    for row in range(4):
        for column in range(4):
            top, bottom = row * height // 4, (row + 1) * height // 4
            left, right = column * width // 4, (column + 1) * width // 4
            if face_box is not None and _overlaps((left, top, right, bottom), face_box):
                cells.extend([-1.0, -1.0, -1.0])
                continue
            mean = pixels[top:bottom, left:right, :3].reshape(-1, 3).mean(axis=0)
            cells.extend(float(channel) for channel in mean)
    return cells


def background_distance(first: list[float], second: list[float]) -> float | None:
    """Mean absolute colour difference over the cells both photos show; None when they share none."""
    a = np.array(first, dtype=np.float32).reshape(-1, 3)
    b = np.array(second, dtype=np.float32).reshape(-1, 3)
    shared = (a[:, 0] >= 0) & (b[:, 0] >= 0)
    if not shared.any():
        return None
    return float(np.abs(a[shared] - b[shared]).mean())


def _overlaps(cell: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    return not (cell[2] <= box[0] or box[2] <= cell[0] or cell[3] <= box[1] or box[3] <= cell[1])


@cache
def _dct_basis(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, so that basis @ x @ basis.T is the 2-D DCT of x."""
    n = np.arange(size)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * np.sqrt(2 / size)
    basis[0] /= np.sqrt(2)
    return basis
