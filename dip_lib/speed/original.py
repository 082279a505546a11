"""The original repository's optimisation loop, re-written from its description, for timing.

DmitryUlyanov/deep-image-prior's notebooks (``restoration.ipynb``, ``inpainting.ipynb``) run, per
iteration: zero the gradients; a closure that draws the input noise in place into a saved buffer
(``noise.normal_()``), adds it to the saved input, runs the network in fp32 eagerly, computes the
masked MSE, calls backward, moves the output to the host and computes the PSNRs there with
scikit-image; then ``torch.optim.Adam`` (default implementation) steps. None of dip_lib's speed
paths (fused Adam, device-side checks, bf16, channels_last, checks every N iterations) are used.
The network is dip_lib's ``SkipNet``, which equals the original ``models/skip.py`` layer for layer.

This is a speed baseline ("original-style loop" in ``python -m dip_lib bench``), not a solver:
use ``dip_lib.fit`` to inpaint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio
from torch import nn


@dataclass
class OriginalTiming:
    """Seconds at the end of every iteration (from the loop's start) and the last loss."""

    elapsed: list[float]
    loss: float


def original_loop(
    net: nn.Module,
    net_input: torch.Tensor,
    truth: np.ndarray,
    mask: np.ndarray,
    iterations: int,
    lr: float = 0.01,
    reg_noise_std: float = 0.03,
    seconds: float | None = None,
) -> OriginalTiming:
    """Run ``iterations`` iterations of the original loop on the CPU (stop early once ``seconds``
    have passed after the first iteration). ``truth`` (C, H, W), ``mask`` (1 or C, H, W) in numpy."""
    net = net.train()
    img_var = torch.from_numpy(np.array(truth, dtype=np.float32))[None]  # a copy: the caller's array may be read-only
    mask_var = torch.from_numpy(np.array(mask, dtype=np.float32))[None]
    img_masked_np = truth * mask
    net_input_saved = net_input.detach().clone()
    noise = net_input.detach().clone()
    mse = nn.MSELoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    elapsed: list[float] = []
    loss_v = float("nan")

    def closure() -> torch.Tensor:
        inp = net_input_saved + noise.normal_() * reg_noise_std if reg_noise_std > 0 else net_input_saved
        out = net(inp)
        total_loss = mse(out * mask_var, img_var * mask_var)
        total_loss.backward()
        out_np = out.detach().cpu().numpy()[0]
        peak_signal_noise_ratio(img_masked_np, out_np * mask, data_range=1.0)
        peak_signal_noise_ratio(truth, np.clip(out_np, 0, 1), data_range=1.0)
        return total_loss

    t0 = time.perf_counter()
    for _ in range(iterations):
        optimizer.zero_grad()
        loss_v = float(closure().detach())
        optimizer.step()
        elapsed.append(time.perf_counter() - t0)
        if seconds is not None and elapsed[-1] - elapsed[0] >= seconds:
            break
    return OriginalTiming(elapsed=elapsed, loss=loss_v)
