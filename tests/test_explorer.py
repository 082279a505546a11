"""The explorer driven headless: a tiny fit through the same widgets and callback, Stop, scrub, save, errors."""

from __future__ import annotations

import datetime
import io
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytest.importorskip("ipywidgets")

from dip_lib.core.errors import DipError  # noqa: E402
from dip_lib.core.imageio import load_image, to_uint8  # noqa: E402
from dip_lib.explorer import Explorer, Snapshots, png_bytes  # noqa: E402

TINY = dict(in_channels=4, channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2))


def _camera() -> np.ndarray:
    return (data.camera()[180:212, 220:252] / 255.0).astype(np.float32)[None]


def _explorer(iterations: int, **kw) -> Explorer:
    return Explorer(
        image=_camera(),
        size=32,
        iterations=iterations,
        net_overrides=TINY,
        device="cpu",
        log_every=5,
        refresh_s=0.0,
        **kw,
    )


REPO = Path(__file__).resolve().parents[1]


def _upload(widget, arr: np.ndarray | bytes) -> None:
    buf = io.BytesIO()
    if isinstance(arr, bytes):
        buf.write(arr)
    else:
        Image.fromarray(arr).save(buf, format="PNG")
    content = buf.getvalue()
    widget.value = (
        {
            "name": "f.png",
            "type": "image/png",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        },
    )


def test_live_run_updates_the_widgets(tmp_path):
    ex = _explorer(40)
    assert ex.widget.children and ex.source.value == "given" and not ex.running
    outputs, maxima = [], []
    ex.output_view.observe(lambda ch: outputs.append(bytes(ch["new"])), names="value")
    ex.slider.observe(lambda ch: maxima.append(ch["new"]), names="max")
    ex.run()
    assert ex.join(timeout=120)
    assert ex.error is None and ex.result.iterations_run == 40
    assert bytes(ex.masked_view.value).startswith(b"\x89PNG")
    assert len({o for o in outputs if o}) >= 5  # the output image changed check after check
    assert maxima == sorted(maxima) and maxima[-1] == len(ex.snapshots) - 1 >= 8
    # the checks, then the final output as the last one (iteration = iterations run), as in the fit's history
    assert ex.history["iteration"] == [0, 5, 10, 15, 20, 25, 30, 35, 39, 40] == ex.result.history.iteration
    assert all(p is not None for p in ex.history["psnr"]) and bytes(ex.curve_view.value).startswith(b"\x89PNG")
    assert "done" in ex.status.value and not ex.slider.disabled and not ex.save_button.disabled
    # one PSNR throughout, the clean output's: curve, snapshots, status and the saved picture agree
    final = ex.result.final_psnr
    assert ex.history["psnr"] == ex.result.history.psnr_clean and ex.snapshots.psnr[-1] == final
    assert ex.history["psnr_observed"][-1] == ex.result.history.psnr_observed[-1]
    assert ex.snapshot_label.value == f"iteration 40, {final:.2f} dB"
    assert f"final PSNR {final:.2f} dB" in ex.status.value

    ex.slider.value = 0  # scrub back to the first snapshot
    assert bytes(ex.output_view.value) == png_bytes(ex.snapshots.image(0))
    assert ex.snapshot_label.value.startswith("iteration 0")
    summary = ex.status.value
    saved = ex.save(tmp_path / "sub" / "first.png")
    np.testing.assert_array_equal(load_image(saved), ex.snapshots.image(0))
    assert saved.is_absolute() and summary in ex.status.value and str(saved) in ex.status.value  # summary kept
    ex.slider.value = len(ex.snapshots) - 1  # the final output, saved as the status reports it
    last = ex.save(tmp_path / "last.png")
    np.testing.assert_array_equal(load_image(last), to_uint8(ex.result.final)[None] / np.float32(255))
    assert f"saved iteration 40, {final:.2f} dB to {last}" in ex.status.value


def test_readout_is_cleared_and_eta_shown(tmp_path):
    ex = _explorer(30)
    placeholder = bytes(ex.output_view.value)
    assert placeholder.startswith(b"\x89PNG") and bytes(ex.curve_view.value).startswith(b"\x89PNG")  # no broken icon
    statuses = []
    ex.status.observe(lambda ch: statuses.append(ch["new"]), names="value")
    ex.run(block=True)
    assert any("left" in s and "elapsed" in s for s in statuses)  # an ETA while it runs
    assert ex.snapshot_label.value and len(ex.snapshots)
    ex.mask_kind.value = "file"  # a new run that fails: the previous pictures and readout go
    ex.run_button.click()
    assert "error" in ex.status.value
    assert bytes(ex.output_view.value) == placeholder and ex.snapshot_label.value == "" and not len(ex.snapshots)
    assert ex.save_button.disabled


def test_defaults_fit_a_laptop():
    ex = Explorer.for_profile("quick", device="cpu")
    assert ex.size.value <= 96 and ex.iterations <= 500
    # the notebook's text names no size: the status line does, from the defaults themselves
    assert ex.status.value == f"ready: {ex.size.value} px, {ex.iterations} iterations of text"
    assert ex.text.value == "Deep | Image | Prior"  # short lines at a small size
    ex.size.value = 256
    assert ex.text.value == "Deep Image Prior"
    ex.text.value = "mine"
    ex.size.value = 64
    assert ex.text.value == "mine"  # a typed text stays


def test_stop_ends_the_fit():
    ex = _explorer(100000)
    ex.run()
    deadline = time.monotonic() + 60
    while len(ex.history["iteration"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ex.running
    ex.stop()
    assert ex.join(timeout=60)
    assert ex.result.iterations_run < 100000 and "stopped" in ex.status.value
    run = ex.result.iterations_run  # the curve, the last snapshot and the status name the same iteration
    assert ex.history["iteration"][-1] == ex.snapshots.iterations[-1] == run
    assert f": {run} iterations" in ex.status.value
    assert ex.snapshot_label.value.startswith(f"iteration {run},")
    assert not ex.run_button.disabled and ex.stop_button.disabled


def test_masks_sources_and_errors(tmp_path):
    ex = _explorer(5)
    ex.mask_kind.value = "text"
    img, mask, gt = ex.build_problem()
    assert mask.shape == (1, 32, 32) and 0 < mask.mean() < 1 and gt is img
    ex.mask_kind.value = "file"
    with pytest.raises(DipError, match="mask file"):
        ex.run()
    ex.run_button.click()  # the button shows the same error instead of raising
    assert "error" in ex.status.value and not ex.running
    _upload(ex.mask_upload, np.where(np.arange(32)[None, :] % 2, 255, 0).astype(np.uint8).repeat(32, 0))
    img, mask, gt = ex.build_problem()
    assert gt is None and mask.mean() == 0.5
    assert "example" not in ex.mask_kind.options  # offered only for images that come with a mask
    ex.source.value = "DIP examples"
    ex.name.value = "kate"
    assert "example" in ex.mask_kind.options
    ex.mask_kind.value = "example"
    ex.name.value = "restoration_barbara"
    assert "example" not in ex.mask_kind.options and ex.mask_kind.value == "bernoulli"
    ex.source.value = "given"

    ex.mask_kind.value = "bernoulli"
    ex.source.value = "upload"
    _upload(ex.upload, (data.camera()[:48, :40]).astype(np.uint8))
    img, mask, _ = ex.build_problem()
    assert img.shape == (1, 32, 27)  # longer side resized to the size box
    ex.source.value = "embedded"
    assert "camera" in ex.name.options
    with pytest.raises(DipError, match="save"):
        ex.save(tmp_path / "x.png")


def test_snapshots_are_thinned():
    snaps = Snapshots(limit=4)
    for it in range(20):
        snaps.add(it, np.full((1, 2, 2), it / 20, np.float32), float(it))
    assert len(snaps) <= 4 and snaps.iterations[0] == 0 and snaps.iterations == sorted(snaps.iterations)
    snaps.add(20, np.ones((1, 2, 2), np.float32), 20.0, last=True)  # the final output is always kept
    assert len(snaps) <= 4 and snaps.iterations[-1] == 20 and snaps.iterations == sorted(snaps.iterations)


def test_huge_uploads_are_refused_in_the_status(monkeypatch):
    ex = _explorer(5)
    ex.source.value = "upload"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # above the placeholder's text (980 pixels)
    for side in (40, 64):  # 1600 pixels: Pillow warns of a decompression bomb; 4096: it refuses
        _upload(ex.upload, np.zeros((side, side), np.uint8))
        ex.run_button.click()
        assert ex.status.value.count("error: image uploaded image is too large") == 1 and not ex.running
    _upload(ex.upload, np.zeros((8, 8), np.uint8))
    ex.mask_kind.value = "file"
    _upload(ex.mask_upload, np.zeros((64, 64), np.uint8))
    ex.run_button.click()
    assert "error: image uploaded mask is too large" in ex.status.value and not ex.running


def test_save_refuses_bad_targets_in_one_line(tmp_path):
    ex = _explorer(5)
    default = Path(ex.save_path.value)
    assert default == REPO / "outputs" / "explorer_output.png"  # not beside the notebooks (tracked)
    ex.snapshots.add(0, _camera(), None)  # something to save, without a fit
    (tmp_path / "file").write_text("keep\n")
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "file")
    refusals = {
        "file/x.png": "is not a folder",
        "folder.png": "exists and is not a regular file",
        "fifo.png": "exists and is not a regular file",
        "link.png": "is a symbolic link",
    }
    for name, why in refusals.items():
        with pytest.raises(DipError, match=why):
            ex.save(tmp_path / name)
        ex.save_path.value = str(tmp_path / name)
        ex.save_button.click()
        assert ex.status.value.startswith("<span") and f"error: save as {tmp_path / name}" in ex.status.value
        assert why in ex.status.value and "\n" not in ex.status.value
    assert (tmp_path / "file").read_text() == "keep\n" and (tmp_path / "fifo.png").is_fifo()
    ex.save_path.value = str(tmp_path / "ok.png")
    ex.save_button.click()
    assert (tmp_path / "ok.png").is_file() and f"to {tmp_path / 'ok.png'}" in ex.status.value


def test_a_corrupt_upload_an_html_path_and_a_fit_too_large_show_in_the_status(tmp_path, monkeypatch):
    from dip_lib.core import estimate

    ex = _explorer(5)
    ex.source.value = "upload"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="TIFF")
    tif = buf.getvalue()
    at = tif.find(struct.pack("<HHI", 273, 4, 1))  # StripOffsets, given type ASCII: Pillow raises TypeError
    _upload(ex.upload, tif[:at] + struct.pack("<HH", 273, 2) + tif[at + 4 :])
    ex.run_button.click()  # never escapes the handler
    assert ex.status.value.count("error: ") == 1 and not ex.running
    ex.source.value = "given"
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: 0)
    ex.run_button.click()
    assert "of memory but" in ex.status.value and not ex.running and ex.result is None
    monkeypatch.undo()
    ex.run(block=True)
    ex.save_path.value = str(tmp_path / "<b>bold</b>.png")
    ex.save_button.click()
    assert "<b>" not in ex.status.value and "&lt;b&gt;bold&lt;/b&gt;" in ex.status.value


def test_an_uploaded_mask_is_resized_with_its_image():
    ex = _explorer(5)
    ex.source.value = "upload"
    _upload(ex.upload, np.full((64, 96), 128, np.uint8))
    m = np.full((64, 96), 255, np.uint8)
    m[30:34, 10:80] = 0
    ex.mask_kind.value = "file"
    _upload(ex.mask_upload, m)
    img, mask, _ = ex.build_problem()
    assert img.shape[1:] == mask.shape[1:] == (21, 32)
    assert 0 < (mask == 0).mean() < 0.5
