"""Strict image and mask I/O: float32 arrays of shape (C, H, W) in [0, 1], atomic writes."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DipError

log = logging.getLogger(__name__)


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise DipError(f"file not found: {path}")
    if not path.is_file():
        raise DipError(f"not a file: {path}")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise DipError(f"not an image file: {path}") from None
    except Image.DecompressionBombError as exc:
        raise DipError(f"image {path} is too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DipError(f"cannot read image {path} (truncated or corrupt): {exc}") from None
    return img


def pil_to_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """PIL image -> float32 (C, H, W) in [0, 1]; gray stays 1 channel, RGB 3, alpha dropped."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # older Pillow opens 16-bit PNGs as mode "I": a PNG in that mode is 16-bit even when dark
        sixteen = mode.startswith("I;16") or img.format == "PNG" or arr.max(initial=0) > 255
        scale = 65535.0 if sixteen else 255.0
        return (np.clip(arr / scale, 0, 1)[None]).astype(np.float32)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        log.warning("%s has an alpha channel; dropping it", name)
        img = img.convert("RGB" if mode in ("RGBA", "PA", "P") else "L")
    elif mode in ("1", "L"):
        img = img.convert("L")
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DipError(f"{name} holds non-finite values (NaN or infinity)")
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        if lo < 0 or hi > 255:
            raise DipError(f"{name} is a float image with values in [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
        if hi > 1:
            log.warning("%s is a float image with values up to %g; reading it as 0..255", name, hi)
            arr = arr / 255.0
        return arr[None]
    elif mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 (C, H, W) in [0, 1]. 16-bit is scaled by 65535."""
    return pil_to_array(_open(Path(path)), name=str(path))


def load_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask file (white = known) as float32 (1, H, W) with values {0, 1}.

    Raises DipError if its size differs from ``shape`` (H, W) or if it is not binary.
    """
    img = _open(Path(path))
    if img.mode in ("RGBA", "LA"):
        img = img.convert("L")
    arr = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I;16") else img)
    if img.mode == "1":
        arr = arr.astype(np.uint8) * 255
    if img.mode == "I;16":
        top = 65535
    else:
        top = 255
    if shape is not None and tuple(arr.shape[:2]) != tuple(shape):
        raise DipError(
            f"mask {path} is {arr.shape[1]}x{arr.shape[0]} but the image is {shape[1]}x{shape[0]} (width x height)"
        )
    bad = int(np.count_nonzero((arr != 0) & (arr != top)))
    if bad:
        raise DipError(f"mask {path} is not binary: {bad} pixels are neither 0 nor {top}")
    return (arr == top).astype(np.float32)[None]


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    arr = np.clip(np.asarray(arr, dtype=np.float32), 0, 1)
    out = np.round(arr * 255).astype(np.uint8)
    return out[0] if out.shape[0] == 1 else out.transpose(1, 2, 0)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and images are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


def image_format(path: str | os.PathLike) -> str:
    """The PIL format an output path's extension names; DipError for any other extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DipError(
            f"cannot write {path}: unknown image extension {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def check_writable(path: str | os.PathLike, flag: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written as a regular file: a folder,
    a device or other special file, a symlink, a parent that is not a folder, or no write permission."""
    path = Path(path)
    if path.is_symlink():
        raise DipError(f"{flag} {path} is a symbolic link; give the path of a regular file")
    if path.exists() and not path.is_file():
        raise DipError(f"{flag} {path} exists and is not a regular file")
    parent = path.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise DipError(f"{flag} {path}: {folder} is not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise DipError(f"{flag} {path}: no permission to write in {folder}")
            break
    if path.exists() and not os.access(path, os.W_OK):
        raise DipError(f"{flag} {path}: no permission to write it")
    return path


def save_image(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Save (C, H, W) float in [0, 1] as an 8-bit image in the format the extension names, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(to_uint8(arr)).save(buf, format=image_format(path))
    atomic_write_bytes(path, buf.getvalue())


def resize_square(img: np.ndarray, side: int, order: int = 1) -> np.ndarray:
    """Resize (C, H, W) to side x side (anti-aliased for order > 0), values kept in [0, 1]."""
    from skimage.transform import resize

    out = resize(np.moveaxis(img, 0, -1), (side, side), order=order, anti_aliasing=order > 0, preserve_range=True)
    return np.clip(np.moveaxis(np.atleast_3d(out), -1, 0), 0, 1).astype(np.float32)


def resize_longer_side(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (C, H, W) so that its longer side is ``size`` (anti-aliased), keeping the aspect."""
    from skimage.transform import resize

    c, h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return img
    out = resize(np.moveaxis(img, 0, -1), (nh, nw), anti_aliasing=scale < 1, preserve_range=True)
    return np.clip(np.moveaxis(out, -1, 0), 0, 1).astype(np.float32)


def center_crop(img: np.ndarray, side: int) -> np.ndarray:
    """The central side x side window of (C, H, W)."""
    h, w = img.shape[-2:]
    if min(h, w) < side:
        raise DipError(f"image is {w}x{h}, smaller than the {side}x{side} crop")
    top, left = (h - side) // 2, (w - side) // 2
    return img[..., top : top + side, left : left + side]


def center_crop_multiple(img: np.ndarray, d: int) -> np.ndarray:
    """Center-crop (C, H, W) so H and W are multiples of ``d`` (the original's ``crop_image``)."""
    h, w = img.shape[-2:]
    nh, nw = h - h % d, w - w % d
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[..., top : top + nh, left : left + nw]
