"""The image reader on hostile files: every decoding error is a DipError (one line), 16-bit RGB kept."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image

from dip_lib.cli import main
from dip_lib.core.errors import DipError
from dip_lib.core.imageio import image_from_bytes, load_image, mask_from_bytes


def png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W, C) uint16 (C = 3 or 4), written by hand: Pillow cannot write one."""
    h, w, c = a.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # each row with PNG filter 1 (Sub) on even rows, so the decoder's unfiltering is exercised
    rows = []
    for y in range(h):
        raw = np.frombuffer(a[y].astype(">u2").tobytes(), np.uint8)
        if y % 2:
            rows.append(b"\x00" + raw.tobytes())
        else:
            prev = np.concatenate([np.zeros(2 * c, np.uint8), raw[: -2 * c]])
            rows.append(b"\x01" + (raw - prev).astype(np.uint8).tobytes())
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_rgb_png_keeps_its_16_bits(tmp_path, channels):
    a = np.random.default_rng(0).integers(0, 65536, (5, 7, channels)).astype(np.uint16)
    a[0, 0, :3] = (1000, 0, 65535)  # 1000/65535, not 3/255
    (tmp_path / "x.png").write_bytes(png16(a))
    got = load_image(tmp_path / "x.png")
    np.testing.assert_allclose(got, a[..., :3].transpose(2, 0, 1) / 65535.0, atol=1e-7)
    np.testing.assert_allclose(image_from_bytes(png16(a)), got)


def _samples() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = {}
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    for fmt, kw in (("PNG", {}), ("JPEG", {"exif": exif}), ("TIFF", {"compression": "tiff_deflate"})):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, **kw)
        out[fmt] = buf.getvalue()
    out["PNG16"] = png16(rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16))
    return out


def _mutants(content: bytes, rng: np.random.Generator, n: int):
    for _ in range(n):
        b = bytearray(content)
        if rng.random() < 0.3:
            yield bytes(b[: rng.integers(1, len(b))])  # truncated
            continue
        for pos in rng.integers(0, len(b), rng.integers(1, 8)):  # a few bytes flipped
            b[pos] ^= int(rng.integers(1, 256))
        yield bytes(b)


def test_the_reader_on_mutated_png_jpeg_and_tiff_returns_an_image_or_a_dip_error():
    rng = np.random.default_rng(1234)
    for fmt, content in _samples().items():
        for k, mutant in enumerate(_mutants(content, rng, 150)):
            for read in (image_from_bytes, mask_from_bytes):
                try:
                    read(mutant)
                except DipError as exc:
                    assert "\n" not in str(exc), (fmt, k, str(exc))
                except Exception as exc:  # noqa: BLE001 - the point: nothing else escapes
                    pytest.fail(f"{fmt} mutant {k}: {type(exc).__name__}: {exc}")


def test_corrupt_exif_and_a_corrupt_tiff_tag_are_one_line_errors(tmp_path, capsys):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "x" * 40
    Image.new("RGB", (64, 64)).save(buf, format="JPEG", exif=exif)
    data = bytearray(buf.getvalue())
    at = data.find(b"\x01\x0f\x00\x02")  # the Make entry (tag 0x010f, ASCII)
    data[at + 1] = 0x08  # now tag 0x0108 (ImageLength) holding text: struct.error in exif_transpose
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    with pytest.raises(DipError):
        load_image(bad)
    tif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tif, format="TIFF")
    t = bytearray(tif.getvalue())
    ifd = struct.unpack("<I", t[4:8])[0]
    for k in range(struct.unpack("<H", t[ifd : ifd + 2])[0]):  # StripOffsets given a wrong type (ASCII)
        e = ifd + 2 + 12 * k
        if struct.unpack("<H", t[e : e + 2])[0] == 273:
            t[e + 2 : e + 4] = struct.pack("<H", 2)
    (tmp_path / "bad.tif").write_bytes(bytes(t))
    for path in (bad, tmp_path / "bad.tif"):
        code = main(["inpaint", str(path), "--bernoulli", "0.5", "-o", str(tmp_path / "o.png")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
