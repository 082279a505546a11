"""The explorer driven headless: a tiny fit through the same widgets and callback, Stop, scrub, save, errors."""

from __future__ import annotations

import datetime
import io
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytest.importorskip("ipywidgets")

from dip_lib.errors import DipError  # noqa: E402
from dip_lib.explorer import Explorer, Snapshots, png_bytes  # noqa: E402
from dip_lib.imageio import load_image  # noqa: E402

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


def _upload(widget, arr: np.ndarray) -> None:
    buf = io.BytesIO()
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
    assert ex.history["iteration"] == [0, 5, 10, 15, 20, 25, 30, 35, 39]
    assert all(p is not None for p in ex.history["psnr"]) and bytes(ex.curve_view.value).startswith(b"\x89PNG")
    assert "done" in ex.status.value and not ex.slider.disabled and not ex.save_button.disabled

    ex.slider.value = 0  # scrub back to the first snapshot
    assert bytes(ex.output_view.value) == png_bytes(ex.snapshots.image(0))
    assert ex.snapshot_label.value.startswith("iteration 0")
    summary = ex.status.value
    saved = ex.save(tmp_path / "sub" / "first.png")
    np.testing.assert_array_equal(load_image(saved), ex.snapshots.image(0))
    assert saved.is_absolute() and summary in ex.status.value and str(saved) in ex.status.value  # summary kept


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
