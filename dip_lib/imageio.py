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
        return np.clip(arr, 0, 1)[None]
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


def save_image(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Save (C, H, W) float in [0, 1] as an 8-bit PNG (or the format the suffix says), atomically."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        path.suffix.lower(), "PNG"
    )
    Image.fromarray(to_uint8(arr)).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
