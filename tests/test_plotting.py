"""seq2seq.plotting: the learning-curve figure of reports."""
import warnings

import pytest

from seq2seq import plotting


def _curves(first_s: float) -> dict:
    return {"a": [{"update": 0, "train_s": first_s, "bleu": 0.0},
                  {"update": 10, "train_s": 60.0, "bleu": 5.0},
                  {"update": 20, "train_s": 120.0, "bleu": 9.0}],
            "b": [{"update": 10, "train_s": 30.0, "bleu": 4.0, "loss": 3.0}]}


@pytest.mark.parametrize("log_time", [False, True])
def test_learning_curves_draw_a_validation_at_time_zero_without_warnings(tmp_path, log_time,
                                                                          monkeypatch):
    axes = []
    real = plotting.plt.subplots

    def keep(*args, **kwargs):
        fig, pair = real(*args, **kwargs)
        axes.extend(pair)
        return fig, pair
    monkeypatch.setattr(plotting.plt, "subplots", keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plotting.learning_curves(_curves(0.0), tmp_path / "c.png", log_time=log_time)
    assert (tmp_path / "c.png").stat().st_size > 0
    ax_t, ax_u = axes
    assert ax_t.get_xscale() == ("log" if log_time else "linear")
    # the updates axis shows every point; on a log time axis the point at time 0 is left out
    assert [len(line.get_xdata()) for line in ax_u.get_lines()] == [3, 1]
    assert [len(line.get_xdata()) for line in ax_t.get_lines()] == [2 if log_time else 3, 1]


def test_learning_curves_keep_a_linear_time_axis_when_no_point_has_time(tmp_path):
    curves = {"a": [{"update": 5, "train_s": 0.0, "bleu": 1.0}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plotting.learning_curves(curves, tmp_path / "c.png", log_time=True)
    assert (tmp_path / "c.png").exists()
