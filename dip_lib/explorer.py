"""A live DIP explorer for JupyterLab (ipywidgets): pick an image, a mask, a preset; watch the fit.

``Explorer().widget`` is the whole interface. Run starts ``dip_lib.core.solver.fit`` in a background
thread, so the kernel stays free; a callback pushes the output, the PSNR curve and a snapshot to the
widgets at fit's checks (at most one redraw per ``refresh_s`` seconds, and always at the last
check) and asks fit to stop once Stop was pressed. Every PSNR, picture and snapshot is the clean
output f_theta(z)'s (the iterate's without a ground truth), as in the report, and the fit's final
output is the last check. Afterwards a slider scrubs through the snapshots (one per check, thinned
to at most ``max_snapshots``) and Save writes the shown one atomically (by default into
``<project>/outputs/``, not beside the notebooks).

Headless use (tests, scripts): ``ex = Explorer(image=arr); ex.run(); ex.join()``.
ipywidgets is imported lazily; images are (C, H, W) float32 in [0, 1] as everywhere in dip_lib.
"""

from __future__ import annotations

import html
import io
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import DipError
from .core.imageio import check_writable, to_uint8
from .core.metrics import masked_psnr

log = logging.getLogger(__name__)

SOURCES = ("embedded", "Table 1", "DIP examples", "upload")
MASKS = ("bernoulli", "text", "file", "example")
PLACEHOLDER_TEXT = "no run yet: press Run"


def placeholder_png(text: str = PLACEHOLDER_TEXT, width_px: int = 256, height_px: int = 256) -> bytes:
    """A light grey PNG with a line of text, shown instead of an empty (broken) image."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (width_px, height_px), 235)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), text)
    draw.text(((width_px - (box[2] - box[0])) / 2, (height_px - (box[3] - box[1])) / 2), text, fill=110)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def default_text(size: int) -> str:
    """A default text mask that fits the image: one line from 160 px, three short lines below."""
    return "Deep Image Prior" if size >= 160 else "Deep | Image | Prior"


def table1_available() -> bool:
    """Whether the Table-1 images are in the cache or a mirror folder (nothing is downloaded)."""
    import os

    try:
        from .core import data

        entries = data.select("table1")
        mirror = os.environ.get("DIP_DATA_MIRROR", "").strip().removeprefix("file://")
        folder = Path(mirror).expanduser() if mirror and not mirror.startswith(("http://", "https://")) else None
        return bool(entries) and all(
            data.cached_path(e).exists() or (folder is not None and (folder / e.path).exists()) for e in entries
        )
    except (ImportError, DipError, OSError):
        return False


def default_save_path() -> Path:
    """``<project>/outputs/explorer_output.png`` for a source checkout, else under the working folder."""
    import dip_lib

    root = Path(dip_lib.__file__).resolve().parent.parent
    return (root if (root / "pyproject.toml").is_file() else Path.cwd()) / "outputs" / "explorer_output.png"


def _error_html(exc: BaseException) -> str:
    """The status line of an error: its text escaped (a path or an upload's name may hold HTML)."""
    return f"<span style='color:#b00'>error: {html.escape(str(exc))}</span>"


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def png_bytes(arr: np.ndarray) -> bytes:
    """(C, H, W) float in [0, 1] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(arr)).save(buf, format="PNG")
    return buf.getvalue()


def curve_png(
    iterations: list[int],
    psnr: list[float | None],
    psnr_observed: list[float],
    stop_iteration: int | None = None,
    width_px: int = 360,
) -> bytes:
    """The PSNR curve (ground truth and observed pixels) rendered off-screen to PNG (no pyplot: thread-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / 100, 0.7 * width_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if any(p is not None for p in psnr):
        ax.plot(iterations, [np.nan if p is None else p for p in psnr], label="vs ground truth")
    ax.plot(iterations, psnr_observed, "--", label="observed pixels")
    if stop_iteration is not None:
        ax.axvline(stop_iteration, color="gray", lw=1, label="ES-WMV stop")
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@dataclass
class Snapshots:
    """Outputs kept at checks as uint8 (C, H, W); past ``limit`` every other one is dropped."""

    limit: int = 120
    iterations: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    psnr: list[float | None] = field(default_factory=list)
    stride: int = 1
    _seen: int = 0

    def add(self, iteration: int, image: np.ndarray, psnr: float | None, last: bool = False) -> None:
        """Keep one check's output; ``last`` (the final output) is always kept, in place of the newest when full."""
        self._seen += 1
        if not last and (self._seen - 1) % self.stride:
            return
        if last and len(self.images) >= self.limit:
            for seq in (self.iterations, self.images, self.psnr):
                seq.pop()
        self.iterations.append(iteration)
        self.images.append(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        self.psnr.append(psnr)
        if len(self.images) > self.limit:
            for seq in (self.iterations, self.images, self.psnr):
                del seq[1::2]
            self.stride *= 2

    def image(self, k: int) -> np.ndarray:
        return self.images[k].astype(np.float32) / 255.0

    def __len__(self) -> int:
        return len(self.images)


class _LiveCallback:
    """fit callback: records each check, redraws the explorer now and then, stops on request."""

    def __init__(self, explorer: Explorer) -> None:
        self.ex = explorer
        self.last_draw = 0.0

    def on_check(self, state) -> bool:
        ex = self.ex
        if state.clean_output is not None:  # with a ground truth: the clean output, as the report shows
            out = state.clean_output.detach().float().cpu().numpy()[0]
            img, mask, _ = ex.problem
            observed = masked_psnr(img, out, mask)
        else:
            out, observed = state.output.detach().float().cpu().numpy()[0], state.psnr_observed
        ex._record(state.iteration, out, state.psnr_clean, observed)
        last = state.iteration >= ex.iterations - 1
        now = time.perf_counter()
        if last or now - self.last_draw >= ex.refresh_s:
            self.last_draw = now
            ex._draw_live(out, state.iteration)
        return ex._stop_event.is_set()


class Explorer:
    """The explorer's widgets and its background fit.

    image: an optional (C, H, W) array offered as the source "given"; size: the longer side images
    are resized to; preset / iterations / seed / device: the fit; net_overrides: SkipConfig fields
    changed from the preset's network (e.g. smaller channels for a quick look); log_every: the check
    interval; refresh_s: least seconds between redraws; es_wmv: mark where ES-WMV would stop.
    """

    def __init__(
        self,
        image: np.ndarray | None = None,
        size: int = 128,
        preset: str = "text",
        iterations: int | None = None,
        net_overrides: dict[str, Any] | None = None,
        device: str = "auto",
        seed: int = 0,
        log_every: int = 10,
        refresh_s: float = 0.5,
        max_snapshots: int = 120,
        es_wmv: bool = True,
    ) -> None:
        import ipywidgets as w

        from .core.presets import PRESETS, get_preset

        self.given = None if image is None else np.asarray(image, dtype=np.float32)
        self.net_overrides = dict(net_overrides or {})
        self.device, self.seed, self.log_every = device, seed, log_every
        self.refresh_s, self.max_snapshots, self.es_wmv = refresh_s, max_snapshots, es_wmv
        self._thread: threading.Thread | None = None
        self._busy = False  # from Run until the widgets show the finished fit
        self._stop_event = threading.Event()
        self._started = 0.0
        self.summary = ""  # the last run's summary line, kept after Save
        self.result = None
        self.error: BaseException | None = None
        self.stopper = None
        self.history: dict[str, list] = {"iteration": [], "psnr": [], "psnr_observed": []}
        self.snapshots = Snapshots(max_snapshots)
        self.problem: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

        sources = (("given",) if self.given is not None else ()) + SOURCES
        first = sources[0] if self.given is not None or not table1_available() else "Table 1"
        self.source = w.Dropdown(options=sources, value=first, description="source")
        self.name = w.Dropdown(description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="image file")
        self.size = w.BoundedIntText(value=size, min=8, max=4096, description="size (px)")
        self.mask_kind = w.Dropdown(options=MASKS, value="bernoulli", description="mask")
        self.fraction = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="missing")
        self.text = w.Text(value=default_text(size), description="text")
        self.mask_upload = w.FileUpload(accept="image/*", multiple=False, description="mask file")
        self.preset = w.Dropdown(options=list(PRESETS), value=get_preset(preset).name, description="preset")
        self.iterations_box = w.BoundedIntText(
            value=iterations or PRESETS[preset].iterations, min=1, max=10**6, description="iterations"
        )
        self.run_button = w.Button(description="Run", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = w.HTML(value=f"ready: {size} px, {self.iterations_box.value} iterations of {preset}")
        self.masked_view = w.Image(value=placeholder_png(), format="png", layout=w.Layout(width="256px"))
        self.output_view = w.Image(value=placeholder_png(), format="png", layout=w.Layout(width="256px"))
        self.curve_view = w.Image(
            value=placeholder_png(width_px=360, height_px=252), format="png", layout=w.Layout(width="360px")
        )
        self.slider = w.IntSlider(value=0, min=0, max=0, description="snapshot", disabled=True, continuous_update=True)
        self.snapshot_label = w.Label(value="")
        self.save_path = w.Text(value=str(default_save_path()), description="save as")
        self.save_button = w.Button(description="Save", icon="save", disabled=True)

        self.source.observe(lambda _: self._on_source(), names="value")
        self.name.observe(lambda _: self._offer_masks(), names="value")
        self.size.observe(self._on_size, names="value")
        self.mask_kind.observe(lambda _: self._on_mask_kind(), names="value")
        self.slider.observe(lambda _: self._show_snapshot(), names="value")
        self.preset.observe(
            lambda ch: setattr(self.iterations_box, "value", PRESETS[ch["new"]].iterations), names="value"
        )
        self.run_button.on_click(lambda _: self._clicked(self.run))
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self._clicked(self.save))
        self._on_source()
        self._on_mask_kind()

        def label(text: str):
            return w.HTML(f"<b>{text}</b>")

        self.widget = w.VBox(
            [
                w.HBox([self.source, self.name, self.upload, self.size]),
                w.HBox([self.mask_kind, self.fraction, self.text, self.mask_upload]),
                w.HBox([self.preset, self.iterations_box, self.run_button, self.stop_button]),
                self.status,
                w.HBox(
                    [
                        w.VBox([label("masked input"), self.masked_view]),
                        w.VBox([label("output"), self.output_view]),
                        w.VBox([label("PSNR"), self.curve_view]),
                    ]
                ),
                w.HBox([self.slider, self.snapshot_label, self.save_path, self.save_button]),
            ]
        )

    @classmethod
    def for_profile(cls, profile: str = "quick", **kwargs: Any) -> Explorer:
        """Defaults by report profile: "smoke" a 32 px image, a tiny network and 20 iterations (a headless
        check); "quick" on a CPU 80 px and 300 iterations (about a minute on 2 cores), on a GPU the
        paper's 512 px and the preset's iterations; "paper" 512 px. ``kwargs`` override any of them."""
        from .core.device import resolve_device

        gpu = resolve_device(kwargs.get("device", "auto")).type != "cpu"
        defaults: dict[str, dict[str, Any]] = {
            "smoke": {
                "size": 32,
                "iterations": 20,
                "log_every": 5,
                "refresh_s": 0.0,
                "net_overrides": {
                    "in_channels": 4,
                    "channels_down": (8, 8),
                    "channels_up": (8, 8),
                    "channels_skip": (2, 2),
                },
            },
            "quick": {"size": 512} if gpu else {"size": 80, "iterations": 300, "log_every": 10},
            "paper": {"size": 512},
        }
        if profile not in defaults:
            raise DipError(f"unknown profile {profile!r}; known: {', '.join(defaults)}")
        return cls(**{**defaults[profile], **kwargs})

    @property
    def iterations(self) -> int:
        return int(self.iterations_box.value)

    @property
    def running(self) -> bool:
        return self._busy

    # ------------------------------------------------------------ choices

    def _on_source(self) -> None:
        src = self.source.value
        names: list[str] = []
        try:
            if src == "Table 1":
                from .core.data import TABLE1_ORDER

                names = [n for n, _ in TABLE1_ORDER]
            elif src == "DIP examples":
                from .core.data import EXAMPLES

                names = list(EXAMPLES)
            elif src == "embedded":
                from .core.data import EMBEDDED_GRAY, EMBEDDED_RGB

                names = list(EMBEDDED_GRAY + EMBEDDED_RGB)
        except ImportError:  # the data layer is optional here: skimage's camera stands in
            names = ["camera"] if src == "embedded" else []
        self.name.options = names
        self.name.value = names[0] if names else None
        self.name.layout.display = "" if names else "none"
        self.upload.layout.display = "" if src == "upload" else "none"
        self._offer_masks()

    def _has_own_mask(self) -> bool:
        if self.source.value != "DIP examples":
            return False
        from .core.data import EXAMPLES

        return EXAMPLES.get(self.name.value) is not None

    def _offer_masks(self) -> None:
        """The "example" mask only for images that come with one."""
        options = MASKS if self._has_own_mask() else tuple(m for m in MASKS if m != "example")
        if tuple(self.mask_kind.options) != options:
            current = self.mask_kind.value
            self.mask_kind.options = options
            self.mask_kind.value = current if current in options else "bernoulli"

    def _on_size(self, change) -> None:
        """Keep the default text fitting the image, unless the user typed their own."""
        if self.text.value == default_text(change["old"]):
            self.text.value = default_text(change["new"])

    def _on_mask_kind(self) -> None:
        kind = self.mask_kind.value
        self.fraction.layout.display = "" if kind == "bernoulli" else "none"
        self.text.layout.display = "" if kind == "text" else "none"
        self.mask_upload.layout.display = "" if kind == "file" else "none"

    @staticmethod
    def _uploaded(upload) -> bytes:
        value = upload.value
        if not value:
            raise DipError(f"choose a file with the '{upload.description}' button first")
        item = value[0] if isinstance(value, (tuple, list)) else next(iter(value.values()))
        return bytes(item["content"])

    def _load_image(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The chosen image (C, H, W) and the example's own mask, if any."""
        src, name = self.source.value, self.name.value
        if src == "given":
            return self.given, None
        if src == "upload":
            from .core.imageio import image_from_bytes

            return image_from_bytes(self._uploaded(self.upload)), None
        try:
            from .core import data
        except ImportError:
            from skimage.data import camera

            return (camera()[None] / 255.0).astype(np.float32), None
        if src == "Table 1":
            return data.load_table1([name])[0][1], None
        if src == "DIP examples":
            return data.load_example(name)
        return data.load_embedded([name])[0][1], None

    def build_problem(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ground truth or corrupted image, mask (1 or C, H, W), ground truth or None) from the choices."""
        from .core import masks
        from .core.imageio import mask_from_bytes, resize_longer_side

        img, example_mask = self._load_image()
        source_shape = img.shape[1:]
        kind = self.mask_kind.value
        if kind == "example":
            if example_mask is None:
                raise DipError("this image has no mask of its own; pick bernoulli, text or file")
            img = resize_longer_side(img, self.size.value)
            example_mask = (resize_longer_side(example_mask, self.size.value) > 0.5).astype(np.float32)
            return img, example_mask, img
        img = resize_longer_side(img, self.size.value)
        shape = img.shape[1:]
        if kind == "bernoulli":
            return img, masks.bernoulli_mask(shape, float(self.fraction.value), seed=self.seed), img
        if kind == "text":
            return img, masks.user_text_mask(shape, self.text.value), img
        # the image's own size, resized with it: known only where every source pixel was
        mask = masks.resize_mask(mask_from_bytes(self._uploaded(self.mask_upload), source_shape), shape)
        return img, mask, None  # with a mask file the image is the corrupted one: no ground truth

    # ------------------------------------------------------------ running

    def _clicked(self, action) -> None:
        try:
            action()
        except (DipError, ValueError) as exc:  # bad choices (e.g. a network override the input cannot feed)
            self.status.value = _error_html(exc)

    def run(self, block: bool = False) -> None:
        """Start a fit with the current choices (in a background thread unless ``block``)."""
        from .core.presets import get_preset

        if self.running:
            raise DipError("a fit is already running; press Stop first")
        self._clear()
        img, mask, gt = self.build_problem()
        preset = get_preset(self.preset.value)
        c, h, w = img.shape
        net, z, cfg = preset.setup(
            img.shape,
            seed=self.seed,
            net=self.net_overrides,
            iterations=self.iterations,
            device=self.device,
            progress=False,
            log_every=self.log_every,
        )
        from .core import estimate
        from .core.nets import SkipConfig

        if isinstance(net.cfg, SkipConfig):  # the command line's check: refused here, not by the OOM killer
            estimate.check_memory(net.cfg, h, w, cfg)
        observed = img * mask
        self.problem = (img, mask, gt)
        self.history = {"iteration": [], "psnr": [], "psnr_observed": []}
        self.snapshots = Snapshots(self.max_snapshots)
        self.result, self.error = None, None
        self._stop_event.clear()
        callbacks: list[Any] = [_LiveCallback(self)]
        self.stopper = None
        if self.es_wmv:
            from .core.stopping import ESWMV

            self.stopper = ESWMV.for_iterations(cfg.iterations, stop=False)
            callbacks.append(self.stopper)
        self.masked_view.value = png_bytes(observed)
        self.output_view.value = placeholder_png("fitting ...")
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._busy = True
        self._started = time.perf_counter()
        self.status.value = f"running {preset.name} on {w}x{h}x{c} for {cfg.iterations} iterations ..."
        self._thread = threading.Thread(
            target=self._work, args=(net, z, observed, mask, cfg, gt, callbacks), name="dip-explorer-fit", daemon=True
        )
        self._thread.start()
        if block:
            self.join()

    def _work(self, net, z, observed, mask, cfg, gt, callbacks) -> None:
        from .core.solver import fit

        try:
            self.result = fit(net, z, observed, mask, cfg, ground_truth=gt, callbacks=callbacks)
        except Exception as exc:  # shown in the status line; the thread must not die silently
            log.exception("explorer fit failed")
            self.error = exc
        finally:
            self._finish()

    def _finish(self) -> None:
        self._busy = False
        res = self.result
        if self.error is not None:
            self._clear()  # no half-finished pictures beside an error
            self.status.value = _error_html(self.error)
        elif res is not None:
            # the final output is the last check (iteration = iterations run), so curve, status and snapshot agree
            h = res.history
            self._record(h.iteration[-1], res.final, h.psnr_clean[-1], h.psnr_observed[-1], last=True)
            self._draw_curve()
            stopped = " (stopped)" if self._stop_event.is_set() else ""
            parts = [f"done{stopped}: {res.iterations_run} iterations in {res.wall_time:.1f} s on {res.device}"]
            if res.final_psnr is not None:
                parts.append(f"final PSNR {res.final_psnr:.2f} dB, best {res.best_psnr:.2f} dB at {res.best_iteration}")
            if self.stopper is not None and self.stopper.stop_iteration is not None:
                parts.append(f"ES-WMV would stop at {self.stopper.stop_iteration}")
            self.status.value = self.summary = "; ".join(parts)
        if len(self.snapshots):
            self.slider.max = len(self.snapshots) - 1
            self.slider.value = len(self.snapshots) - 1
            self.slider.disabled, self.save_button.disabled = False, False
            self._show_snapshot()
        self.run_button.disabled, self.stop_button.disabled = False, True

    def _record(self, iteration: int, out: np.ndarray, psnr: float | None, observed: float, last: bool = False) -> None:
        """One check in the history and the snapshots: the shown output and its PSNRs."""
        self.history["iteration"].append(iteration)
        self.history["psnr"].append(psnr)
        self.history["psnr_observed"].append(observed)
        self.snapshots.add(iteration, out, psnr, last=last)

    def _draw_curve(self) -> None:
        stop_at = self.stopper.stop_iteration if self.stopper is not None else None
        h = self.history
        self.curve_view.value = curve_png(h["iteration"], h["psnr"], h["psnr_observed"], stop_at)

    def _draw_live(self, out: np.ndarray, iteration: int) -> None:
        self.output_view.value = png_bytes(out)
        self._draw_curve()
        self.slider.max = max(0, len(self.snapshots) - 1)
        self.slider.value = self.slider.max
        psnr, observed = self.history["psnr"][-1], self.history["psnr_observed"][-1]
        p = f", PSNR {psnr:.2f} dB" if psnr is not None else ""
        done = iteration + 1
        elapsed = time.perf_counter() - self._started
        eta = (
            f", {_eta(elapsed)} elapsed, about {_eta(elapsed / done * max(0, self.iterations - done))} left"
            if done > 1
            else ""
        )
        self.status.value = f"iteration {iteration}/{self.iterations}{p}, observed {observed:.2f} dB{eta}"

    def _clear(self) -> None:
        """Forget the previous run's pictures, snapshots and readout (a new run starts or failed to)."""
        self.history = {"iteration": [], "psnr": [], "psnr_observed": []}
        self.snapshots = Snapshots(self.max_snapshots)
        self.result, self.summary = None, ""
        self.masked_view.value = placeholder_png()
        self.output_view.value = placeholder_png()
        self.curve_view.value = placeholder_png(width_px=360, height_px=252)
        self.snapshot_label.value = ""
        self.slider.disabled, self.save_button.disabled = True, True
        self.slider.max, self.slider.value = 0, 0

    def stop(self) -> None:
        """Ask the running fit to stop at its next check."""
        self._stop_event.set()
        self.stop_button.disabled = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the fit to end; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # ------------------------------------------------------------ snapshots

    def _show_snapshot(self) -> None:
        if self.running or not len(self.snapshots):
            return
        k = min(self.slider.value, len(self.snapshots) - 1)
        self.output_view.value = png_bytes(self.snapshots.image(k))
        p = self.snapshots.psnr[k]
        self.snapshot_label.value = f"iteration {self.snapshots.iterations[k]}" + (
            f", {p:.2f} dB" if p is not None else ""
        )

    def save(self, path: str | Path | None = None) -> Path:
        """Save the snapshot the slider shows (atomic write, format by extension); returns the path.

        Refused in one line, as by the command line: a folder, a FIFO or other special file, a symlink,
        a parent that is a file, no permission."""
        from .core.imageio import save_image

        if not len(self.snapshots):
            raise DipError("nothing to save yet: run a fit first")
        if self.running:
            raise DipError("the fit is still running; wait or press Stop")
        target = check_writable(Path(path if path is not None else self.save_path.value).expanduser(), "save as")
        try:
            save_image(target, self.snapshots.image(min(self.slider.value, len(self.snapshots) - 1)))
        except OSError as exc:  # e.g. the disk is full, or the folder changed since the check
            raise DipError(f"cannot save {target}: {exc.strerror or exc}") from None
        target = target.resolve()
        saved = f"saved {self.snapshot_label.value} to {target}"
        self.status.value = html.escape("; ".join(x for x in (self.summary, saved) if x))
        return target
