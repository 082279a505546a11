"""dip_lib: a faithful, modern Deep Image Prior inpainting library (Ulyanov et al., CVPR 2018)."""
from .errors import DipError
from .fit import CheckState, FitConfig, FitResult, History, fit, resolve_device
from .imageio import load_image, load_mask, save_image
from .inputs import make_input, meshgrid_input, noise_input
from .masks import Inpainting, bernoulli_mask, recipe_text_mask, text_mask, user_text_mask
from .metrics import masked_psnr, psnr, ssim
from .nets import SkipConfig, SkipNet, count_params
from .presets import PRESETS, Preset, get_preset, sweep_net

__version__ = "0.1.0"

__all__ = [
    "DipError", "CheckState", "FitConfig", "FitResult", "History", "fit", "resolve_device",
    "load_image", "load_mask", "save_image", "make_input", "meshgrid_input", "noise_input",
    "Inpainting", "bernoulli_mask", "recipe_text_mask", "text_mask", "user_text_mask",
    "masked_psnr", "psnr", "ssim", "SkipConfig", "SkipNet", "count_params",
    "PRESETS", "Preset", "get_preset", "sweep_net",
]
