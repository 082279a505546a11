"""Strict image and mask I/O: float32 arrays of shape (C, H, W) in [0, 1], atomic writes.

Files are read as a viewer shows them (turned as their EXIF orientation says). Every mode Pillow
opens is either converted with its own scale (8-bit /255, 16-bit /65535, float as it is) or refused
in one line. Alpha: an image's alpha channel is ignored (its stored colours are used); a mask's is
honoured (transparent = hole, see ``load_mask``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DipError

log = logging.getLogger(__name__)

# Modes Pillow converts for us to 8-bit gray or RGB, keeping alpha where there is any ("P" is decided
# by its transparency); "L", "LA", "RGB", "RGBA", "I;16*", "I" and "F" are read as they are.
_CONVERT = {
    "1": "L",
    "La": "LA",
    "PA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}


def _read(source: Path | bytes, name: str) -> tuple[Image.Image, Image.Image | None]:
    """Open and decode ``source`` completely; decompression bombs (Pillow's warning too) are refused.
    Returns the image and, for a 16-bit RGB(A) PNG, the low bytes of its samples (see ``_low_bytes``)."""

    def fresh():
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)

    try:
        with _pillow_warnings(name):
            img = fresh()
            low = _low_bytes(img, fresh)
            img.load()
    except UnidentifiedImageError:
        raise DipError(f"not an image file: {name}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DipError(f"image {name} is too large: {exc}") from None
    except Exception as exc:  # a corrupt file makes Pillow's decoders raise almost anything (struct.error, TypeError)
        raise DipError(f"cannot read image {name} (truncated or corrupt): {_why(exc)}") from None
    return img, low


@contextlib.contextmanager
def _pillow_warnings(name: str) -> Iterator[None]:
    """Decompression bomb warnings raise; Pillow's other warnings about a file (a corrupt tag it skips)
    are logged on one line each instead of printed with their source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield
    for w in {str(w.message).strip() for w in caught}:
        log.warning("%s: %s", name, w)


def _why(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__


def _low_bytes(img: Image.Image, reopen) -> Image.Image | None:
    """Pillow decodes a 16-bit RGB(A) PNG to 8 bits, its samples' high bytes; decoding the same data
    as little-endian gives the low bytes (the PNG filters work on whole samples either way)."""
    tile = img.tile[0] if img.format == "PNG" and len(img.tile) == 1 else None
    if tile is None or tile.args not in ("RGB;16B", "RGBA;16B"):
        return None
    low = reopen()
    low.tile = [tile._replace(args=tile.args.replace(";16B", ";16L"))]
    low.load()
    return low


def _open(path: Path) -> tuple[Image.Image, Image.Image | None]:
    path = Path(path)
    if not path.exists():
        raise DipError(f"file not found: {path}")
    if not path.is_file():
        raise DipError(f"not a file: {path}")
    return _read(path, str(path))


def _upright(img: Image.Image, name: str) -> None:
    """Turn ``img`` in place as its EXIF orientation says (idempotent: the tag is removed)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # corrupt EXIF raises struct.error, TypeError, ...
        raise DipError(f"cannot read the EXIF orientation of {name}: {_why(exc)}") from None


def _declared_bits(img: Image.Image) -> int | None:
    """Bits per sample a mode "I" file declares: PNG and PPM widen 16-bit (rescaled) data to "I"."""
    if img.format in ("PNG", "PPM"):
        return 16
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258, (32,))[0]  # BitsPerSample
        return bits if bits <= 16 else None
    return None


def _int32(img: Image.Image, name: str) -> tuple[np.ndarray, int]:
    """Mode "I" (32-bit signed): values must fit 16 bits; scaled by the depth the file declares, else by
    the smaller of the 8- and 16-bit ranges that holds them. Returns (values in [0, 1], the value read as 1)."""
    arr = np.asarray(img, dtype=np.int64)
    lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
    bits = _declared_bits(img)
    limit = 2 ** (bits or 16) - 1
    if lo < 0 or hi > limit:
        raise DipError(f"{name} is a 32-bit integer image with values in [{lo}, {hi}]; expected 0..{limit}")
    if bits is None:
        bits = 8 if hi <= 255 else 16
        log.warning("%s is a 32-bit integer image with values up to %d; reading it as %d-bit", name, hi, bits)
    top = 2**bits - 1
    return (arr / top).astype(np.float32), top


def _float(img: Image.Image, name: str) -> tuple[np.ndarray, int]:
    """Mode "F": finite values in [0, 1] as they are, or in [0, 255] scaled by 255 (and that scale)."""
    arr = np.asarray(img, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DipError(f"{name} holds non-finite values (NaN or infinity)")
    lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
    if lo < 0 or hi > 255:
        raise DipError(f"{name} is a float image with values in [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
    if hi > 1:
        log.warning("%s is a float image with values up to %g; reading it as 0..255", name, hi)
        return arr / 255.0, 255
    return arr, 1


def _channels(img: Image.Image, name: str, low: Image.Image | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(colour float32 (C, H, W) in [0, 1] with C = 1 or 3, alpha float32 (H, W) in [0, 1] or None,
    the stored value read as 1), upright as a viewer shows ``img``; DipError for a mode it cannot read
    or any other decoding error. ``low``: the low bytes of a 16-bit RGB(A) PNG's samples."""
    try:
        with _pillow_warnings(name):
            return _decode(img, name, low)
    except DipError:
        raise
    except Exception as exc:  # lazy decoding (tags, conversions) of a corrupt file
        raise DipError(f"cannot read image {name} (corrupt): {_why(exc)}") from None


def _decode(img: Image.Image, name: str, low: Image.Image | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    _upright(img, name)
    if low is not None:
        _upright(low, name)
        arr = (np.asarray(img, dtype=np.float32) * 256 + np.asarray(low, dtype=np.float32)) / 65535.0
        arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr[:3]), (arr[3] if img.mode == "RGBA" else None), 65535
    target = ("RGBA" if "transparency" in img.info else "RGB") if img.mode == "P" else _CONVERT.get(img.mode)
    if target:
        try:
            img = img.convert(target)
        except ValueError as exc:  # a conversion this Pillow lacks
            raise DipError(f"cannot read {name}: image mode {img.mode!r} cannot be converted ({exc})") from None
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        alpha = arr[-1] if mode.endswith("A") else None
        return np.ascontiguousarray(arr[:-1] if alpha is not None else arr), alpha, 255
    if mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[None], None, 65535
    if mode in ("I", "F"):
        arr, top = _int32(img, name) if mode == "I" else _float(img, name)
        return arr[None], None, top
    raise DipError(f"cannot read {name}: image mode {mode!r} is not supported; save it as 8- or 16-bit gray or RGB")


def pil_to_array(img: Image.Image, name: str = "image", low: Image.Image | None = None) -> np.ndarray:
    """PIL image -> float32 (C, H, W) in [0, 1]: gray stays 1 channel, colour becomes RGB (3).

    ``img`` is first turned in place as its EXIF orientation says. An alpha channel is ignored: the
    stored colours are used as if every pixel were opaque (a warning when some are not); holes
    belong in a mask. 16-bit is scaled by 65535, float images are taken in [0, 1] (or [0, 255]).
    ``low``: the low bytes of a 16-bit RGB(A) PNG's samples (``_read``).
    """
    colour, alpha, _ = _channels(img, name, low)
    if alpha is not None and (alpha < 1).any():
        log.warning("%s has transparent pixels; ignoring its alpha channel (give holes as a mask)", name)
    return colour


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 (C, H, W) in [0, 1] (see ``pil_to_array``)."""
    img, low = _open(Path(path))
    return pil_to_array(img, str(path), low)


def image_from_bytes(content: bytes, name: str = "uploaded image") -> np.ndarray:
    """``load_image`` for the bytes of an image file (an upload)."""
    img, low = _read(bytes(content), name)
    return pil_to_array(img, name, low)


def _to_mask(img: Image.Image, name: str, shape: tuple[int, int] | None) -> np.ndarray:
    colour, alpha, top = _channels(img, name)
    if shape is not None and tuple(colour.shape[1:]) != tuple(shape):
        raise DipError(
            f"{name} is {colour.shape[2]}x{colour.shape[1]} but the image is {shape[1]}x{shape[0]} (width x height)"
        )
    white, black = (colour == 1).all(0), (colour == 0).all(0)
    transparent = alpha is not None and not (alpha == 1).all()
    if transparent:
        semi = int(np.count_nonzero((alpha != 0) & (alpha != 1)))
        if semi:
            raise DipError(f"{name} is not binary: {semi} pixels are neither opaque nor transparent")
    opaque = alpha == 1 if transparent else np.ones_like(white)
    bad = int(np.count_nonzero(opaque & ~(white | black)))
    if bad:
        raise DipError(f"{name} is not binary: {bad} pixels are neither 0 nor {top}")
    known = opaque & white
    if transparent and not known.any():  # every opaque pixel black: the alpha channel alone holds the holes
        known = opaque
    return known.astype(np.float32)[None]


def load_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask file as float32 (1, H, W) with values {0, 1} (1 = known).

    White = known, black = hole (any depth; colour pixels count when all channels agree). With
    transparent pixels the alpha channel marks holes too: transparent = hole, opaque = known, and an
    opaque pixel is also a hole where it is black, unless every opaque pixel has the same colour.
    Raises DipError if its size differs from ``shape`` (H, W) or if it is not binary.
    """
    return _to_mask(_open(Path(path))[0], f"mask {path}", shape)


def mask_from_bytes(content: bytes, shape: tuple[int, int] | None = None, name: str = "uploaded mask") -> np.ndarray:
    """``load_mask`` for the bytes of a mask file (an upload)."""
    return _to_mask(_read(bytes(content), name)[0], name, shape)


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
