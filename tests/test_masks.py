"""Masks: Bernoulli draws (fraction, seeding, pixelwise vs per channel) and rendered text masks."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from dip_lib.core.errors import DipError
from dip_lib.core.masks import Inpainting, bernoulli_mask, font_path, recipe_text_mask, text_mask, user_text_mask


@pytest.mark.parametrize("missing", [0.1, 0.5, 0.9])
def test_bernoulli_fraction_within_tolerance(missing):
    m = bernoulli_mask((256, 256), missing, seed=3)
    assert m.shape == (1, 256, 256) and m.dtype == np.float32
    assert set(np.unique(m)) <= {0.0, 1.0}
    # the standard deviation of the observed fraction is at most 0.5 / 256 ~ 0.002
    assert abs((1 - m.mean()) - missing) < 0.01


def test_bernoulli_is_reproducible_and_seed_dependent():
    a, b = bernoulli_mask((64, 48), 0.5, seed=7), bernoulli_mask((64, 48), 0.5, seed=7)
    c = bernoulli_mask((64, 48), 0.5, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pixelwise_mask_is_shared_by_all_channels():
    m = bernoulli_mask((32, 40), 0.5, seed=0)
    assert m.shape == (1, 32, 40)
    image = np.full((3, 32, 40), 0.7, np.float32)
    masked = image * m
    assert masked.shape == (3, 32, 40)
    assert np.array_equal(masked[0], masked[1]) and np.array_equal(masked[1], masked[2])
    assert np.array_equal(masked[0] == 0, m[0] == 0)


def test_per_channel_mask_differs_across_channels():
    m = bernoulli_mask((32, 40), 0.5, seed=0, channels=3)
    assert m.shape == (3, 32, 40)
    assert not np.array_equal(m[0], m[1]) and not np.array_equal(m[1], m[2])
    assert abs((1 - m.mean()) - 0.5) < 0.05


@pytest.mark.parametrize("missing", [0.0, 1.0, -0.1, 1.5])
def test_bernoulli_rejects_fractions_outside_open_interval(missing):
    with pytest.raises(DipError):
        bernoulli_mask((8, 8), missing)


def test_inpainting_operator_multiplies_by_the_mask():
    m = torch.tensor(bernoulli_mask((16, 16), 0.25, seed=1))
    op = Inpainting(m)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(op(x), x * m)
    assert op.missing_fraction == pytest.approx(1 - float(m.mean()))


def test_recipe_text_mask_is_deterministic_and_partial():
    a = recipe_text_mask((512, 512), "seed")
    b = recipe_text_mask((512, 512), "seed")
    assert a.shape == (1, 512, 512) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0}
    missing = 1 - a.mean()
    assert 0.0 < missing < 0.20
    # the first line starts at (x, y) = (128, 128): nothing above or left of it is hidden
    rows, cols = np.nonzero(a[0] == 0)
    assert rows.min() >= 128 and cols.min() >= 128


def test_recipe_text_mask_scales_to_other_sizes():
    m = recipe_text_mask((256, 384), "seed")
    assert m.shape == (1, 256, 384)
    assert 0.0 < 1 - m.mean() < 0.20


def test_unknown_recipe_is_a_user_error():
    with pytest.raises(DipError, match="unknown text mask recipe"):
        recipe_text_mask((64, 64), "nope")


def test_user_text_mask_is_deterministic_and_partial():
    a = user_text_mask((128, 160), "Hello | World")
    b = user_text_mask((128, 160), "Hello | World")
    assert a.shape == (1, 128, 160)
    assert np.array_equal(a, b)
    assert 0.0 < 1 - a.mean() < 0.20
    assert not np.array_equal(a, user_text_mask((128, 160), "Other words"))


def test_font_comes_from_matplotlib_data_path(monkeypatch, tmp_path):
    path = font_path()
    assert path.is_file()
    assert path.is_relative_to(Path(matplotlib.get_data_path()))
    # with an empty matplotlib data folder there is no fallback to a system font
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))
    with pytest.raises(DipError, match="DejaVuSans-Bold.ttf"):
        text_mask((64, 64), [("x", 10, (0, 0))])
