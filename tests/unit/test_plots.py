"""The figure functions on small synthetic inputs: each returns a new Figure that pyplot does not
track, saving writes a PNG, and the plotting modules import nothing from bluebook but their helpers."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bluebook.plots import analysis as aplots  # noqa: E402
from bluebook.plots import blue, edits, locate, replication, save  # noqa: E402

PLOTS = Path(__file__).resolve().parents[2] / "bluebook" / "plots"


class _Rows:
    def __init__(self, rows, layers):
        self._rows, self.layers = rows, layers

    def rows(self):
        return self._rows


class _Table:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)


def _figures():
    layers = [0, 1, 2]
    trace = SimpleNamespace(tokens=["The", " Dan", "ielle", " is"], subject_range=(1, 2), low=0.1, high=0.6,
                            target=" French", prompt="The Danielle is",
                            scores={"mlp": np.linspace(0.1, 0.6, 12).reshape(4, 3)})
    res = _Rows([{"case_id": j, "layer": layer, "distance": 2 - layer, "cosine": 0.5 + 0.1 * layer,
                  "deviation": 1.0 - 0.3 * layer,
                  "distribution_error": 0.5, "norm_direct": 2.0} for j in range(3) for layer in layers], layers)
    sc = _Rows([{"case_id": j, "layer": layer, "residual": k, "score": 0.1 * layer + j * 0.01}
                for j in range(3) for layer in layers for k in ("distributed", "direct")], layers)
    bound_rows = [{"layer": layer, "distance": 2 - layer, "deviation": 0.1 + layer, "bound": 2.0 + layer,
                   "tight_bound": 1.0 + layer,
                   "batch_size": b, "seq_length": b - 1} for layer in layers for b in (1, 2)]
    table = _Table(bound_rows)
    summary = {"efficacy": 90.0, "generalization": 60.0, "specificity": 70.0}
    yield locate.trace_heatmap(trace)
    yield locate.ie_curves({"mlp": [0.1, 0.3, 0.2]}, highlight=[1, 2])
    yield aplots.contribution_curves(sc)
    yield aplots.cosine_curve(res)
    yield aplots.residual_deviation_curve(res)
    yield aplots.single_layer_bars({0: {"distributed": summary, "direct": summary, "unedited": summary}})
    yield aplots.deviation_vs_bound(table)
    yield aplots.deviation_growth(table, table, table)
    yield blue.steps_per_layer(layers, [3.0, 1.0, 0.0], [1.0, 0.5, 0.0], paper={"x": [2.0, 1.0]}, max_steps=5)
    yield blue.method_comparison({"memit": summary, "memit_blue": summary})
    yield blue.changed_weights({"memit": {0: 1.0, 1: 0.5}, "memit_blue": {0: 1.2}})
    yield blue.choice_gaps({1: {"gap": 0.3, "steps": 2.0}, 2: {"gap": 0.1, "steps": 1.0}}, chosen=1, first=0)
    yield blue.layers_over_sequence({"fixed": [[0, 2], [0, 2]], "dynamic": [[0, 1], [0, 2]]}, [0, 1, 2])
    yield edits.before_after_bars([{"prompt": "p", "group": "edited", "before": 0.1, "after": 0.9}])
    yield edits.topk_table([{"prompt": "p", "top": [(" a", 0.5), (" b", 0.2)]}])
    yield replication.method_bars({"unedited": summary, "memit": summary, "memit_blue": summary})
    yield replication.results_heatmap({"unedited": summary, "memit": summary})
    yield replication.perplexity_bars({"unedited": 20.0, "memit": 21.0, "memit_blue": 20.5})
    yield replication.shift_distributions({"memit": [0.1, 0.2, 0.3], "memit_blue": [0.1, 0.15, 0.2]})


def _drawn(fig) -> int:
    """How many data-carrying artists the figure's axes hold (lines with points, bars, images,
    collections, table cells)."""
    n = 0
    for ax in fig.axes:
        n += sum(len(line.get_xdata()) > 0 for line in ax.get_lines())
        n += len(ax.patches) + len(ax.images) + len(ax.collections) + len(ax.tables)
    return n


def test_every_figure_is_new_untracked_and_draws_something(tmp_path):
    plt.close("all")
    n = 0
    for fig in _figures():
        assert isinstance(fig, Figure) and fig.axes, fig
        assert _drawn(fig) > 0, f"figure {n} draws no data"
        n += 1
    assert n == 19
    assert plt.get_fignums() == []          # nothing registered with pyplot
    path = save(locate.ie_curves({"mlp": [0.0, 1.0]}), tmp_path, "curve")
    assert path == tmp_path / "figures" / "curve.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_figures_draw_their_inputs():
    """What is drawn is what was given: the curve's points, the bars' heights."""
    fig = locate.ie_curves({"mlp": [0.1, 0.3, 0.2]}, highlight=[1, 2])
    (line,) = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [0.1, 0.3, 0.2]
    fig = blue.steps_per_layer([4, 5, 6], [3.0, 1.0, 0.0], [1.0, 0.5, 0.0], paper={"x": [2.0, 1.0]}, max_steps=5)
    assert [b.get_height() for b in fig.axes[0].patches] == [3.0, 1.0, 0.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["L4", "L5", "L6"]
    assert [list(ln.get_ydata()) for ln in fig.axes[1].get_lines()] == [[2.0, 1.0], [3.0, 1.0, 0.0]]
    fig = replication.perplexity_bars({"unedited": 20.0, "memit": 21.0, "memit_blue": 20.5})
    ax = fig.axes[0]
    assert [b.get_height() for b in ax.patches] == [20.0, 21.0, 20.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["unedited", "memit", "memit_blue"]
    assert ax.get_ylim()[0] < 20.0 < 21.0 < ax.get_ylim()[1]      # every bar's top is inside the axis


@pytest.mark.parametrize("path", sorted(PLOTS.glob("*.py")), ids=lambda p: p.name)
def test_plots_import_only_plot_helpers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bluebook"):
            # plots compute nothing: only plot helpers and the method names (the paper's order)
            assert node.module.startswith("bluebook.plots") or node.module == "bluebook.core.names", \
                (path.name, node.module)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("bluebook") and not a.name.startswith("bluebook.plots")
                           for a in node.names), path.name


def test_layers_over_sequence_draws_one_square_per_updated_layer_and_batch():
    from bluebook.plots import blue

    fig = blue.layers_over_sequence({"fixed": [[4, 8], [4, 8]], "dynamic": [[4, 5], [4, 6], [4, 5]]}, [4, 5, 6, 7, 8])
    fixed, dynamic = fig.axes
    pts = sorted(map(tuple, dynamic.collections[0].get_offsets().tolist()))
    assert pts == [(0, 4), (0, 5), (1, 4), (1, 6), (2, 4), (2, 5)]
    assert len(fixed.collections[0].get_offsets()) == 4
    assert [t.get_text() for t in fixed.get_yticklabels()] == ["L4", "L5", "L6", "L7", "L8"]


def test_paired_forest_draws_one_interval_per_pair_rule_and_metric():
    from bluebook.plots import curves as cplots

    def row(ds, rule, value):
        cl = {"ours": value, "interval": [value - 1.0, value + 2.0]}
        return {"dataset": ds, "run": ds, "same_cap_run": ds, "rule": rule, "base": "memit", "blue": "memit_blue",
                "claims": {"efficacy": cl, "generalization": cl, "specificity": {"ours": None, "interval": None}}}

    rows = [row("zsre", "same cap per optimisation", 10.0), row("zsre", "equal total per request", 4.0),
            row("counterfact", "same cap per optimisation", 3.0)]
    fig = cplots.paired_forest(rows)
    eff, gen, spec = fig.axes[:3]
    # errorbar containers: one per row that has the metric; none where the claim is unmeasured
    assert len(eff.containers) == 3 and len(gen.containers) == 3 and len(spec.containers) == 0
    xs = sorted(float(c.lines[0].get_xdata()[0]) for c in eff.containers)
    assert xs == [3.0, 4.0, 10.0]
    # the same pair under the two rules sits on either side of its label's line
    ys = {float(c.lines[0].get_xdata()[0]): float(c.lines[0].get_ydata()[0]) for c in eff.containers}
    assert ys[10.0] < ys[4.0] and abs(ys[10.0] - ys[4.0]) == pytest.approx(0.25)
    assert [t.get_text() for t in eff.get_yticklabels()] == ["zsre: MEMIT", "counterfact: MEMIT"]
    # two runs of one dataset are told apart by their run, not drawn on one line
    other = dict(row("counterfact", "same cap per optimisation", 5.0), run="cf2", same_cap_run="cf2")
    first = dict(rows[2], run="cf1", same_cap_run="cf1")
    labels = [t.get_text() for t in cplots.paired_forest([first, other]).axes[0].get_yticklabels()]
    assert labels == ["cf1: MEMIT", "cf2: MEMIT"]


def test_metric_curves_draw_a_dynamic_variant_beside_its_base_not_as_one():
    """``memit_blue_dynamic`` belongs to MEMIT's panel in its own colour; it is not a base method."""
    from bluebook.plots.curves import DYNAMIC_COLOR, metric_curves
    from bluebook.plots.replication import BASE_COLOR, BLUE_COLOR

    rows = [{"method": m, "edits": e, "metric": "efficacy", "value": v + e / 100, "low": v - 1, "high": v + 1, "n": 10}
            for m, v in (("memit", 50.0), ("memit_blue", 60.0), ("memit_blue_dynamic", 55.0)) for e in (100, 200)]
    fig = metric_curves(rows, metrics=("efficacy",), unedited=False)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 1 and axes[0].get_title() == "MEMIT"          # one panel: the base's
    got = {line.get_label(): (line.get_color(), list(line.get_ydata())) for line in axes[0].lines}
    assert got["base method"] == (BASE_COLOR, [51.0, 52.0])
    assert got["its BLUE variant"] == (BLUE_COLOR, [61.0, 62.0])
    assert got["BLUE, second layer chosen per batch"] == (DYNAMIC_COLOR, [56.0, 57.0])
