from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medtune.errors import MedtuneError
from medtune.evaluate import plots
from medtune.evaluate.plots import (
    comparison_plot,
    grounding_samples_plot,
    reliability_plot,
    roc_grid,
    roc_plot,
    subgroup_plot,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def curve(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    fpr = np.concatenate([[0], np.sort(rng.random(8)), [1]])
    tpr = np.sqrt(fpr)
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def reliability(seed: int, empty_bin: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, 1, 11)
    confidence = (edges[:-1] + edges[1:]) / 2
    accuracy = np.clip(confidence + rng.normal(0, 0.05, 10), 0, 1)
    count = rng.integers(1, 50, 10).astype(float)
    if empty_bin is not None:
        confidence[empty_bin] = accuracy[empty_bin] = np.nan
        count[empty_bin] = 0
    return {"confidence": confidence, "accuracy": accuracy, "count": count, "edges": edges}


def test_roc_plot_is_a_deterministic_png_of_the_expected_size():
    curves = {"probe": curve(0), "lora": curve(1)}
    plot = roc_plot(curves, "Pneumonia, test split")
    assert plot.name == "pneumonia_test_split"
    assert plot.caption == "Pneumonia, test split"
    height, width, _ = decode(plot.png).shape
    assert (width, height) == (600, 400)
    assert roc_plot(curves, "Pneumonia, test split").png == plot.png


def test_roc_plot_draws_each_model_in_its_own_colour():
    one = decode(roc_plot({"a": curve(0)}, "t").png)
    two = decode(roc_plot({"a": curve(0), "b": curve(1)}, "t").png)
    # tab10's second colour (orange, ~(255, 127, 14)) appears only once a second model is drawn.
    orange = lambda im: ((im[..., 0] > 230) & (abs(im[..., 1].astype(int) - 127) < 30)).sum()  # noqa: E731
    assert orange(one) == 0
    assert orange(two) > 50


def test_roc_grid_lays_out_seven_panels_in_two_rows_of_four():
    panels = {f"task {k}": {"probe": curve(k), "full": curve(k + 10)} for k in range(7)}
    plot = roc_grid(panels, "All findings")
    height, width, _ = decode(plot.png).shape
    assert width == pytest.approx(4 * 260, abs=2)
    assert height == pytest.approx(2 * 260 + 90, abs=2)
    two = {f"task {k}": {"probe": curve(k)} for k in range(3)}
    assert decode(roc_grid(two, "t", columns=2).png).shape[:2] == (2 * 260 + 90, 2 * 260)


def test_roc_grid_survives_a_nan_auroc_and_a_model_missing_from_a_panel():
    fpr, tpr, _ = curve(0)
    panels = {"a": {"m1": (fpr, tpr, float("nan"))}, "b": {"m2": curve(1)}}
    decode(roc_grid(panels, "sparse").png)


def test_reliability_plot_skips_empty_bins_and_shows_the_ece():
    curves = {"probe": {**reliability(0, empty_bin=3), "ece": 0.0421}, "full": reliability(1)}
    plot = reliability_plot(curves, "Calibration")
    height, width, _ = decode(plot.png).shape
    assert (width, height) == (600, 500)
    assert reliability_plot(curves, "Calibration").png == plot.png
    # All bins empty still draws (only the diagonal and the zero counts).
    empty = reliability(2)
    empty["confidence"][:] = np.nan
    empty["count"][:] = 0
    decode(reliability_plot({"m": empty}, "empty").png)


def test_reliability_plot_rejects_a_missing_key():
    curve = reliability(0)
    del curve["edges"]
    with pytest.raises(MedtuneError, match="edges"):
        reliability_plot({"m": curve}, "t")


def test_subgroup_plot_height_grows_with_the_groups_and_nan_draws():
    series = {"probe": [(0.8, 0.7, 0.9), (float("nan"),) * 3], "full": [(0.85, 0.8, 0.9)] * 2}
    short = subgroup_plot(["site A", "site B"], series, "AUROC by site")
    assert short.name == "auroc_by_site"
    short_height = decode(short.png).shape[0]
    groups = [f"site {k}" for k in range(30)]
    long = {m: [(0.7 + 0.005 * k, 0.6, np.nan) for k in range(30)] for m in ("probe", "full")}
    long_height = decode(subgroup_plot(groups, long, "AUROC by site").png).shape[0]
    assert long_height > 3 * short_height
    assert subgroup_plot(["site A", "site B"], series, "AUROC by site").png == short.png


def test_subgroup_plot_bars_end_at_their_value():
    # One model, one group on [0, 1]: a bar of 0.5 is half as long as a bar of 1.
    def bar_length(value: float) -> int:
        png = subgroup_plot(["g"], {"m": [(value, value, value)]}, "t", reference=None).png
        pixels = decode(png)
        blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)  # tab10's first colour
        # The longest blue run in a row: the bar, not the legend's short patch.
        runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row, 0]))) for row in blue.astype(int)]
        return max(r[::2].max() for r in runs if r.size)

    assert bar_length(0.5) / bar_length(1.0) == pytest.approx(0.5, abs=0.03)


def test_subgroup_plot_rejects_a_series_of_the_wrong_length():
    with pytest.raises(MedtuneError, match="'m' has 1 estimates for 2 groups"):
        subgroup_plot(["a", "b"], {"m": [(0.5, 0.4, 0.6)]}, "t")


def test_comparison_plot_is_a_png_and_takes_nan_rows():
    rows = ["pneumonia", "effusion", "fracture"]
    estimates = {
        "probe": [(0.8, 0.75, 0.85), (0.7, 0.6, 0.8), (np.nan, np.nan, np.nan)],
        "full": [(0.82, 0.78, 0.86), (0.75, np.nan, np.nan), (0.9, 0.85, 0.95)],
    }
    plot = comparison_plot(rows, estimates, "Probe against full fine-tuning")
    height, width, _ = decode(plot.png).shape
    assert width == 600 and 200 < height < 500
    assert comparison_plot(rows, estimates, "Probe against full fine-tuning").png == plot.png


def grounding_sample(truth, predicted) -> dict:
    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 2:4] = 1.0
    return {
        "image": np.full((64, 64), 0.1, np.float32),
        "heat": heat,
        "truth": truth,
        "predicted": predicted,
        "caption": "pt-0001 nodule",
    }


def test_grounding_boxes_are_drawn_green_and_red_where_they_belong():
    samples = [grounding_sample((8, 8, 40, 48), (20, 16, 56, 56))]
    figure = plots._grounding_figure(samples, "Grounding", 3)
    pixels = decode(plots._png(figure))  # drawing fixes the axes' place (equal aspect)
    assert plots._png(plots._grounding_figure(samples, "Grounding", 3)) == (
        grounding_samples_plot(samples, "Grounding").png
    )
    ax = figure.axes[0]
    height = pixels.shape[0]

    def colour_at(x: float, y: float) -> np.ndarray:
        # Image pixel coordinates -> PNG row and column (display y counts from the bottom).
        col, row = ax.transData.transform((x, y))
        return pixels[round(height - row), round(col)].astype(int)

    left_edge = colour_at(8, 28)  # the true box's left edge, away from the predicted box
    assert left_edge[1] > 150 and left_edge[0] < 100 and left_edge[2] < 120
    right_edge = colour_at(56, 36)  # the predicted box's right edge (solid part or gap)
    near = [colour_at(56, y) for y in np.linspace(30, 42, 13)]
    assert any(c[0] > 180 and c[1] < 80 and c[2] < 80 for c in near), right_edge
    inside = colour_at(30, 12)  # inside the true box: the dark image, no box colour
    assert inside.max() < 90


def test_grounding_grid_scales_with_columns_and_is_deterministic():
    samples = [grounding_sample((8, 8, 40, 48), None) for _ in range(4)]
    plot = grounding_samples_plot(samples, "Grounding samples", columns=3)
    assert plot.name == "grounding_samples"
    height, width, _ = decode(plot.png).shape
    assert width == pytest.approx(3 * 260, abs=2)
    assert grounding_samples_plot(samples, "Grounding samples", columns=3).png == plot.png
    wide = decode(grounding_samples_plot(samples, "Grounding samples", columns=4).png)
    assert wide.shape[1] > width and wide.shape[0] < height


def test_empty_inputs_raise_medtune_errors():
    with pytest.raises(MedtuneError):
        roc_plot({}, "t")
    with pytest.raises(MedtuneError):
        roc_grid({}, "t")
    with pytest.raises(MedtuneError):
        grounding_samples_plot([], "t")
    with pytest.raises(MedtuneError, match="shape"):
        grounding_samples_plot([{"image": np.zeros((4, 4, 3))}], "t")
