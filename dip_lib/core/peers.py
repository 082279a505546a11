"""Classical inpainting peers run on the same masks as DIP: biharmonic and convolutional sparse coding.

biharmonic: scikit-image's ``inpaint_biharmonic`` (the missing pixels solve Delta^2 u = 0 with the
observed pixels as boundary values).

csc: a convolutional sparse coding inpainter in the spirit of Papyan et al. (ICCV 2017, the CSC
column of DIP's Table 1), built from SPORCO (B. Wohlberg) the way its example ``cbpdn_md_gry``
does it: a lowpass image from l2-TV denoising with the mask as data weight,
    l = argmin_u 1/2 ||m * (u - y)||^2 + lambda_TV ||grad u||_1,
then the highpass h = m * (y - l) coded over a fixed dictionary with mask decoupling (Heide et al. 2015),
    min_X 1/2 ||m * (sum_k d_k conv x_k - h)||^2 + lambda ||X||_1,
and the result l + sum_k d_k conv x_k. Unlike Papyan et al. the dictionary is not learned from the
image: it is one that SPORCO ships (``sporco.util.convdicts()``, 36 greyscale 12x12 filters).
Colour images are coded channel by channel with the same greyscale dictionary.

Arrays: observed (C, H, W) float32 in [0, 1]; mask (1 or C, H, W), 1 = observed.
sporco is imported lazily (``pip install sporco``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .errors import DipError
from .metrics import psnr, ssim

log = logging.getLogger(__name__)

CSC_DICTIONARY = "G:12x12x36"
CSC_LAMBDA = 0.01  # l1 weight of the coefficient maps
CSC_ITERATIONS = 30  # ADMM iterations: about 40 s for 512x512 grey on 2 busy CPU cores (PSNR within ~0.2 dB of 100)
LOWPASS_LAMBDA = 0.05  # TV weight of the masked l2-TV lowpass (SPORCO's example value)
LOWPASS_ITERATIONS = 100
PAD = 8  # symmetric padding around the image; the padded border counts as unobserved
METHODS = ("biharmonic", "csc")


def _check(observed: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return observed (C, H, W) float64 and the mask broadcast to (C, H, W) as bool."""
    obs = np.asarray(observed, dtype=np.float64)
    m = np.asarray(mask)
    if obs.ndim != 3:
        raise DipError(f"the observed image must have shape (C, H, W), got {obs.shape}")
    if m.ndim != 3 or m.shape[1:] != obs.shape[1:] or m.shape[0] not in (1, obs.shape[0]):
        raise DipError(f"the mask must have shape (1 or {obs.shape[0]}, {obs.shape[1]}, {obs.shape[2]}), got {m.shape}")
    known = np.broadcast_to(m > 0.5, obs.shape)
    if not known.any():
        raise DipError("the mask has no observed pixels")
    return obs * known, known


def biharmonic(observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting (scikit-image) of the pixels where ``mask`` is 0; (C, H, W) float32 in [0, 1]."""
    from skimage.restoration import inpaint_biharmonic

    obs, known = _check(observed, mask)
    if np.asarray(mask).shape[0] == 1 and obs.shape[0] > 1:  # one mask for all channels
        out = inpaint_biharmonic(np.moveaxis(obs, 0, -1), ~known[0], channel_axis=-1)
        out = np.moveaxis(out, -1, 0)
    else:
        out = np.stack([inpaint_biharmonic(obs[c], ~known[c]) for c in range(obs.shape[0])])
    return np.clip(out, 0, 1).astype(np.float32)


def _import_sporco():
    try:
        import sporco.fft
        from sporco.admm import cbpdn, tvl2
        from sporco.util import convdicts
    except ImportError:
        raise DipError("convolutional sparse coding needs sporco: pip install sporco") from None
    return sporco.fft, cbpdn, tvl2, convdicts


def csc(
    observed: np.ndarray,
    mask: np.ndarray,
    lmbda: float = CSC_LAMBDA,
    iterations: int | None = CSC_ITERATIONS,
    dictionary: str = CSC_DICTIONARY,
) -> np.ndarray:
    """Convolutional sparse coding inpainting (module docstring); (C, H, W) float32 in [0, 1].

    ``lmbda``: l1 weight (default CSC_LAMBDA = 0.01); ``iterations``: ADMM iterations of the coding
    (default CSC_ITERATIONS = 30; None means the default); ``dictionary``: a key of sporco.util.convdicts().
    """
    fft, cbpdn, tvl2, convdicts = _import_sporco()
    iterations = CSC_ITERATIONS if iterations is None else int(iterations)
    if iterations <= 0:
        raise DipError(f"CSC iterations must be positive, got {iterations}")
    dicts = convdicts()
    if dictionary not in dicts:
        raise DipError(f"unknown sporco dictionary {dictionary!r}; known: {', '.join(dicts)}")
    obs, known = _check(observed, mask)
    pad = ((PAD, PAD), (PAD, PAD), (0, 0))
    s = np.pad(np.moveaxis(obs, 0, -1), pad, mode="symmetric").astype(np.float32)  # (H', W', C)
    w = np.pad(np.moveaxis(known, 0, -1), pad).astype(np.float32)
    # FFTW's default 'measure' planning costs tens of seconds per new image size; 'estimate' plans at once
    # and runs about as fast on these sizes
    effort = fft.pyfftw_planner_effort
    fft.pyfftw_planner_effort = "FFTW_ESTIMATE"
    try:
        tv_opt = tvl2.TVL2Denoise.Options(
            {
                "Verbose": False,
                "MaxMainIter": LOWPASS_ITERATIONS,
                "DFidWeight": w,
                "gEvalY": False,
                "AutoRho": {"Enabled": True},
            }
        )
        low = tvl2.TVL2Denoise(s, LOWPASS_LAMBDA, tv_opt, axes=(0, 1)).solve()
        high = w * (s - low)  # masked, as SPORCO's example does, for faster convergence
        opt = cbpdn.ConvBPDNMaskDcpl.Options(
            {
                "Verbose": False,
                "MaxMainIter": iterations,
                "HighMemSolve": True,
                "RelStopTol": 1e-3,
                "AuxVarObj": False,
                "RelaxParam": 1.8,
                "rho": 50 * lmbda + 0.1,
                "AutoRho": {"Enabled": False},
            }
        )
        solver = cbpdn.ConvBPDNMaskDcpl(dicts[dictionary].astype(np.float32), high, lmbda, w, opt=opt, dimK=0)
        solver.solve()
        rec = solver.reconstruct().reshape(s.shape)
    finally:
        fft.pyfftw_planner_effort = effort
    out = (low + rec)[PAD:-PAD, PAD:-PAD]
    return np.clip(np.moveaxis(out, -1, 0), 0, 1).astype(np.float32)


def csc_params(
    lmbda: float = CSC_LAMBDA, iterations: int | None = None, dictionary: str = CSC_DICTIONARY
) -> dict[str, Any]:
    return {
        "dictionary": dictionary,
        "lmbda": lmbda,
        "iterations": CSC_ITERATIONS if iterations is None else iterations,
        "rho": 50 * lmbda + 0.1,
        "lowpass": "masked l2-TV",
        "lowpass_lambda": LOWPASS_LAMBDA,
        "lowpass_iterations": LOWPASS_ITERATIONS,
        "pad": PAD,
        "solver": "sporco.admm.cbpdn.ConvBPDNMaskDcpl",
    }


def run_peers(
    ground_truth: np.ndarray,
    mask: np.ndarray,
    methods: tuple[str, ...] = METHODS,
    csc_iterations: int | None = None,
    missing: str = "raise",
) -> dict[str, dict[str, Any]]:
    """Run each peer on ``ground_truth * mask``; per method {"psnr", "ssim", "wall_time", "output", "params"}.

    ``missing``: what to do when sporco is absent for "csc": "raise" (a DipError) or "skip" (a warning).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DipError(f"unknown peer method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if missing not in ("raise", "skip"):
        raise ValueError("missing must be 'raise' or 'skip'")
    gt = np.asarray(ground_truth, dtype=np.float32)
    observed = gt * np.asarray(mask, dtype=np.float32)
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method == "csc":
            try:
                _import_sporco()
            except DipError as exc:
                if missing == "raise":
                    raise
                log.warning("skipping csc: %s", exc)
                continue
        t0 = time.perf_counter()
        if method == "biharmonic":
            out = biharmonic(observed, mask)
            params: dict[str, Any] = {"solver": "skimage.restoration.inpaint_biharmonic"}
        else:
            out = csc(observed, mask, iterations=csc_iterations)
            params = csc_params(iterations=csc_iterations)
        wall = time.perf_counter() - t0
        results[method] = {
            "psnr": psnr(gt, out),
            "ssim": ssim(gt, out),
            "wall_time": wall,
            "output": out,
            "params": params,
        }
        log.info("%s: PSNR %.2f dB in %.1f s", method, results[method]["psnr"], wall)
    return results
