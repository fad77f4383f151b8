"""Figure layout: overlapping texts are found, column widths are applied."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medrepro.figures import save_figure, target_width, text_overlaps, unlabelled_axes  # noqa: E402


def test_a_title_running_into_the_row_above_is_found():
    fig, axes = plt.subplots(2, 1, figsize=(3, 3))
    for ax in axes:
        ax.imshow(np.zeros((8, 8)))
        ax.axis("off")
    axes[1].set_title("a title\non three\nlines", fontsize=14)
    fig.subplots_adjust(hspace=0.05)
    problems = text_overlaps(fig)
    assert any("axes 1 title" in p and "plotting area of axes 0" in p for p in problems), problems
    fig.tight_layout()
    assert text_overlaps(fig) == []
    plt.close(fig)


def test_an_axis_label_over_its_tick_labels_is_found():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1000000, 2000000])
    ax.set_yticks([1500000], ["a long tick label at the middle"])
    ax.set_ylabel("label")
    ax.yaxis.set_label_coords(-0.1, 0.5)   # pulled in over the tick labels
    assert any("y label" in p and "y tick" in p for p in text_overlaps(fig))
    plt.close(fig)


def test_figures_are_saved_at_the_configured_column_width(tmp_path, capsys):
    style = {"dpi": 100, "formats": ["png"], "font_size": 8, "widths": {"single": 3.5, "double": 7.0}}
    assert target_width(5.0, {**style, "layout": "natural"}) is None
    assert target_width(5.0, {**style, "layout": "columns"}) == 3.5      # up to 1.5 single columns
    assert target_width(6.0, {**style, "layout": "columns"}) == 7.0
    assert target_width(6.0, style, "single") == 3.5
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    ax.set(title="t", xlabel="x", ylabel="y")
    (path,) = save_figure(fig, tmp_path / "f", style, layout="single")
    with Image.open(path) as im:
        w, h = im.size
    assert abs(w - 350) <= 40 and abs(h - 175) <= 40        # bbox 'tight' trims a little
    assert capsys.readouterr().err == ""
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x")
    ax.set_title("a title far too long for so narrow a figure " * 2)
    fig.text(0.5, 0.95, "a text over the title", ha="center", fontsize=14)
    save_figure(fig, tmp_path / "g", style)
    assert "figure g: " in capsys.readouterr().err


def test_an_axis_without_a_label_is_named():
    fig, (a, b) = plt.subplots(1, 2, figsize=(5, 2))
    a.plot([0, 1], [0, 1])
    a.set_xlabel("epoch")
    a.set_title("loss")
    b.imshow(np.zeros((4, 4)))
    b.axis("off")
    assert unlabelled_axes(fig) == ["axes 0 ('loss') has no y label"]
    a.set_ylabel("loss")
    assert unlabelled_axes(fig) == []
    plt.close(fig)


def test_the_scale_note_stays_below_a_constrained_layout(tmp_path, capsys):
    fig, axes = plt.subplots(1, 3, figsize=(6, 2.2), layout="constrained")
    for ax in axes:
        ax.imshow(np.zeros((8, 8)))
        ax.set_title("true a\npred b (0.90)", fontsize="x-small")
        ax.axis("off")
    fig.suptitle("one row of predictions", fontsize="small")
    save_figure(fig, tmp_path / "f", {"dpi": 60, "formats": ["png"]}, note="demo scale: synthetic stand-in data")
    assert capsys.readouterr().err == ""


def test_the_forest_plot_draws_each_value_with_its_own_interval(tmp_path, capsys):
    """The reproduced interval as recorded; the published one as wide as its own error, recovered
    from the difference's interval; labels coloured by verdict; no layout problem."""
    import pandas as pd
    from scipy import stats

    from medrepro.figures import OKABE_ITO, forest_figure
    from medrepro.uncertainty import compare_estimates, published_se

    rows = []
    for metric, pub, rep, low, high in (("accuracy", 0.86, 0.80, 0.74, 0.85), ("recall", 0.98, 0.70, 0.60, 0.79),
                                        ("precision", 0.83, 0.84, 0.79, 0.88)):
        se, _ = published_se(pub, 624, None, 624, 624)
        res = compare_estimates(pub, rep, low, high, se, 0.05)
        rows.append({"experiment": "e", "metric": metric, "published": pub, "reproduced": rep, "ci_low": low,
                     "ci_high": high, "se_pub": se, **res})
    comp = pd.DataFrame(rows)
    fig = forest_figure(comp, "p: published and reproduced")
    ax = fig.axes[0]
    rep_bar, pub_bar = ax.containers[0], ax.containers[1]
    assert list(rep_bar.lines[0].get_xdata()) == list(comp["reproduced"])
    rep_segments = rep_bar.lines[2][0].get_segments()
    assert [(s[0][0], s[1][0]) for s in rep_segments] == list(zip(comp["ci_low"], comp["ci_high"]))
    z = stats.norm.ppf(0.975)
    half = [(s[1][0] - s[0][0]) / 2 for s in pub_bar.lines[2][0].get_segments()]
    assert np.allclose(half, z * comp["se_pub"], rtol=1e-9)
    colours = [t.get_color() for t in ax.get_yticklabels()]
    assert colours[1] == OKABE_ITO[3] and comp.loc[1, "verdict"] == "different"  # recall 0.70 vs 0.98
    save_figure(fig, tmp_path / "forest")
    assert "figure forest" not in capsys.readouterr().err


def test_a_legend_over_the_data_and_a_font_too_small_at_column_width_are_found():
    from medrepro.figures import legends_over_data, small_fonts

    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.linspace(0, 1, 50)
    ax.plot(x, np.full_like(x, 0.95), label="near the top")
    ax.plot(x, x * 0.5, label="low")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper right")
    assert legends_over_data(fig) and "axes 0 legend covers" in legends_over_data(fig)[0]
    ax.legend(loc="lower right")  # below the top line, right of the low one's end: clear
    ax.set_ylim(-0.6, 1.0)
    assert legends_over_data(fig) == []
    ax.set_title("title", fontsize=6)
    assert small_fonts(fig, None, {}) == []  # 4 in to a 3.5 in single column: 6 pt becomes 5.25
    wide, ax2 = plt.subplots(figsize=(14, 3))
    ax2.set_title("title", fontsize=8)
    problems = small_fonts(wide, None, {})  # 14 in to a 7.16 in double column: 8 pt becomes 4.1
    assert any("title 'title' is 4.1 pt at 7.16 in wide" in p for p in problems), problems
    plt.close("all")


def test_the_layout_checks_share_one_draw_and_find_what_each_finds_alone():
    from medrepro.figures import layout_problems, legends_over_data, small_fonts

    fig, ax = plt.subplots(figsize=(14, 3))
    x = np.linspace(0, 1, 50)
    ax.plot(x, np.full_like(x, 0.95), label="near the top")
    ax.plot(x, x * 0.5, label="low")
    ax.legend(loc="upper right")
    ax.set_title("title", fontsize=8)
    draws = []
    fig.canvas.mpl_connect("draw_event", lambda event: draws.append(event))
    problems = layout_problems(fig, None, {})
    assert len(draws) == 1  # was one draw per check (four), before saving draws again per format
    alone = (text_overlaps(fig) + unlabelled_axes(fig) + legends_over_data(fig) + small_fonts(fig, None, {}))
    assert problems == alone and len(draws) == 4
    assert any("legend covers" in p for p in problems) and any("4.1 pt" in p for p in problems)
    assert any("no y label" in p for p in problems)
    plt.close(fig)


def test_a_step_log_keeps_its_figure_warnings_without_the_font_subsetter_chatter(tmp_path):
    """Saving a PDF subsets its fonts with fontTools, which logs every table it prunes at INFO."""
    from medrepro.io import logging_to

    log = tmp_path / "step.log"
    with logging_to(log):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("x")
        save_figure(fig, tmp_path / "fig")   # no y label: one warning
    text = log.read_text()
    assert "figure fig: axes 0 ('') has no y label" in text
    assert "pruned" not in text and "fontTools" not in text
    assert (tmp_path / "fig.pdf").stat().st_size > 0
