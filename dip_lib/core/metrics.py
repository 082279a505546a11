"""Image quality: PSNR and SSIM from scikit-image on outputs clipped to [0, 1], data_range 1."""

from __future__ import annotations

import numpy as np


def _hwc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(1 / mean((ref - clip(est, 0, 1))^2)) for (C, H, W) arrays."""
    # imported here: skimage.metrics pulls in scipy.stats (about a second), slowing every CLI start
    from skimage.metrics import peak_signal_noise_ratio

    return float(
        peak_signal_noise_ratio(
            np.asarray(reference, np.float64), np.clip(estimate, 0, 1).astype(np.float64), data_range=1.0
        )
    )


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Structural similarity (scikit-image defaults, data_range 1) for (C, H, W) arrays."""
    from skimage.metrics import structural_similarity

    ref, est = _hwc(reference), _hwc(np.clip(estimate, 0, 1))
    channel_axis = None if ref.ndim == 2 else -1
    return float(structural_similarity(ref, est, data_range=1.0, channel_axis=channel_axis))


def masked_psnr(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the observed entries only (mask == 1), broadcast over channels."""
    m = np.broadcast_to(np.asarray(mask) > 0.5, np.shape(reference))
    err = (np.asarray(reference, np.float64) - np.clip(estimate, 0, 1))[m]
    mse = float(np.mean(err**2)) if err.size else 0.0
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def hole_psnr(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR over the missing entries only (mask < 0.5), broadcast over channels; None when none is missing."""
    hole = np.broadcast_to(np.asarray(mask) < 0.5, np.shape(reference))
    return masked_psnr(reference, estimate, hole) if hole.any() else None
