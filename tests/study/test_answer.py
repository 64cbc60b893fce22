"""The study's answer (study/answer.py) on synthetic studies whose truth is known: residual vs plain and shortcut
differences with Welch's interval (paper Fig. 6, Table 3, Table 6), depth trends by least squares, and what it
says when there are too few seeds. Pure and fast: no Ray, no MLflow.

Run: ``.venv/bin/python -m pytest tests/study/test_answer.py -q``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats

from study.answer import Answer, Difference, Trend, answer, ols_slope, welch_interval
from study.report import GroupResult

CHOICE_FLAG = ("no trial trained all 64,000 iterations: the best early-stopped one (at iteration 30,000) was "
               "chosen",)


def group(arch: str, errors: Sequence[float], shortcut: str | None = "A",
          flags: tuple[str, ...] = ()) -> GroupResult:
    """A group as the runner reports it: ``resnet56`` + ``A`` -> ``resnet56-A``; plain nets have no shortcut."""
    residual = arch.startswith("resnet")
    option = shortcut if residual else None
    return GroupResult(group=arch if option is None else f"{arch}-{option}", arch=arch,
                       depth=int(arch.removeprefix("resnet").removeprefix("plain")), residual=residual,
                       shortcut=option, params=None, lr=0.1, weight_decay=1e-4, val_error=10.0, trials=8,
                       stopped_early=0, test_errors=tuple(errors), flags=flags)


def difference(result: Answer, first: str, second: str) -> Difference:
    (found,) = [d for d in result.differences if (d.first, d.second) == (first, second)]
    return found


def trend(result: Answer, family: str) -> Trend:
    (found,) = [t for t in result.trends if t.family == family]
    return found


def hand_welch(x: Sequence[float], y: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """Welch's interval written out with numpy, independently of study.answer."""
    a, b = np.asarray(x), np.asarray(y)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    d = a.mean() - b.mean()
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    return float(d), float(d - half), float(d + half)


# The truth of this study: ResNet-56 (A) 3.00 points better than plain-56 (values symmetric about 7 and 10);
# at depth 20 both nets have mean 9.00 (zero-mean noise); plain nets worsen with depth, ResNets improve.
CLEAN = [
    group("resnet20", [8.7, 9.3, 9.1, 8.9]), group("plain20", [9.2, 8.8, 8.95, 9.05]),
    group("resnet56", [6.8, 7.0, 7.2]), group("plain56", [9.7, 10.0, 10.3]),
    group("resnet110", [6.2, 6.5, 6.4]), group("plain110", [12.6, 13.1, 12.9]),
]


def test_a_large_clean_gap_is_significant_with_the_right_sign_and_covers_the_truth() -> None:
    gap = difference(answer(CLEAN), "resnet56-A", "plain56")
    assert gap.label == "ResNet (A) vs plain" and gap.depth == 56 and (gap.n_first, gap.n_second) == (3, 3)
    assert gap.mean == pytest.approx(-3.0) and gap.better == "resnet56-A"
    assert gap.significant and gap.low is not None and gap.high is not None
    assert gap.low < -3.0 < gap.high < 0


def test_zero_mean_noise_is_not_significant() -> None:
    gap = difference(answer(CLEAN), "resnet20-A", "plain20")
    assert gap.mean == pytest.approx(0.0, abs=1e-12) and gap.significant is False
    assert gap.low is not None and gap.high is not None and gap.low < 0 < gap.high
    assert "not significant" in answer(CLEAN).sentences()[0]


def test_the_interval_is_welchs_as_computed_by_hand_and_by_scipy() -> None:
    x, y = [6.8, 7.0, 7.2, 7.9], [9.7, 10.0, 10.3]  # unequal sizes and variances
    for confidence in (0.95, 0.9):
        got = welch_interval(x, y, confidence)
        assert got == pytest.approx(hand_welch(x, y, confidence), rel=1e-12)
        ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
        assert got[1:] == pytest.approx((ci.low, ci.high), rel=1e-9)
    result = answer([group("resnet56", x), group("plain56", y)], confidence=0.9)
    gap = difference(result, "resnet56-A", "plain56")
    assert (gap.mean, gap.low, gap.high) == pytest.approx(hand_welch(x, y, 0.9), rel=1e-12)
    assert "(90% CI " in result.sentences()[0]


def test_the_interval_covers_the_truth_and_rejects_a_true_null_at_about_the_nominal_rate() -> None:
    """Calibration over 2,000 synthetic studies of 3 seeds per group, unequal spreads: the 95% interval covers
    the true gap about 95% of the time, so about 5% of null studies read as significant."""
    rng = np.random.default_rng(0)
    covered = rejected = 0
    runs = 2000
    for _ in range(runs):
        x, y = rng.normal(7.0, 0.2, 3), rng.normal(7.0, 0.6, 3)
        gap = difference(answer([group("resnet20", x.tolist()), group("plain20", y.tolist())]), "resnet20-A",
                         "plain20")
        assert gap.low is not None and gap.high is not None
        covered += gap.low <= 0.0 <= gap.high
        rejected += bool(gap.significant)
    assert covered + rejected == runs
    assert 0.03 <= rejected / runs <= 0.07


def test_plain_nets_worsening_with_depth_is_a_significant_positive_slope() -> None:
    result = answer(CLEAN)
    plain = trend(result, "plain")
    x = [math.log2(d) for d, n in ((20, 4), (56, 3), (110, 3)) for _ in range(n)]
    y = [e for g in CLEAN if not g.residual for e in g.test_errors]
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * fit.stderr
    assert plain.verdict == "gets worse with depth" and plain.depths == (20, 56, 110) and plain.n == 10
    assert plain.slope is not None and plain.slope > 0 and plain.p_value is not None and plain.p_value < 0.05
    assert (plain.slope, plain.low, plain.high, plain.p_value) == pytest.approx(
        (fit.slope, fit.slope - half, fit.slope + half, fit.pvalue), rel=1e-9)
    resnets = trend(result, "ResNet (A)")
    assert resnets.verdict == "gets better with depth" and resnets.slope is not None and resnets.slope < 0
    assert result.sentences()[-2].startswith("Plain nets get worse with depth: slope +")


def test_flat_noise_has_no_significant_trend() -> None:
    flat = [group("plain20", [9.1, 8.8, 9.0]), group("plain56", [8.9, 9.2, 9.0]), group("plain110", [9.0, 8.85, 9.1])]
    plain = trend(answer(flat), "plain")
    assert plain.verdict == "no significant trend" and plain.p_value is not None and plain.p_value > 0.05
    assert plain.low is not None and plain.high is not None and plain.low < 0 < plain.high
    assert "Plain nets show no significant trend with depth" in answer(flat).sentences()[-1]


def test_ols_slope_of_points_on_a_line_and_its_limits() -> None:
    assert ols_slope([1, 2, 3], [1.0, 3.0, 5.0]) == (2.0, 2.0, 2.0, 0.0)
    with pytest.raises(ValueError, match="at least 3 points"):
        ols_slope([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 values per group"):
        welch_interval([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        answer(CLEAN, confidence=95)


def test_one_seed_per_group_asks_for_more_instead_of_guessing() -> None:
    result = answer([group("resnet20", [8.7]), group("plain20", [9.1]), group("plain56", [10.0])])
    gap = difference(result, "resnet20-A", "plain20")
    assert (gap.mean, gap.low, gap.high, gap.significant) == (None, None, None, None)
    sentence = result.sentences()[0]
    assert sentence == ("At depth 20, ResNet (A) vs plain (resnet20-A vs plain20): 1 final seed each; at least 2 per "
                        "group are needed for an interval (set train.final_seeds >= 2).")
    assert "CI" not in sentence and "better" not in sentence
    plain = trend(result, "plain")
    assert plain.verdict == "not tested" and plain.slope is None and "needs at least 3" in plain.note
    unequal = answer([group("resnet20", [8.7, 8.8]), group("plain20", [9.1])]).sentences()[0]
    assert "2 and 1 final seed; at least 2 per group" in unequal


def test_without_final_retraining_only_validation_errors_are_reported() -> None:
    result = answer([group("resnet20", []), group("plain20", []), group("resnet56", []), group("plain56", [])])
    assert all(s.endswith("no final retraining: validation errors only, not compared.") for s in result.sentences())
    assert all(d.mean is None for d in result.differences) and all(t.slope is None for t in result.trends)
    half = answer([group("resnet20", [8.7, 8.8]), group("plain20", [])]).sentences()[0]
    assert "plain20 has no final retraining: validation errors only, not compared" in half


def test_shortcut_options_are_compared_only_where_both_exist_and_a_stand_in_is_named() -> None:
    result = answer([
        group("resnet20", [8.7, 8.9, 8.8], "A"), group("resnet20", [8.6, 8.7, 8.5], "B"),
        group("resnet20", [8.4, 8.5, 8.6], "C"), group("plain20", [9.1, 9.4, 9.0]),
        group("resnet56", [7.0, 7.3, 6.9], "A"), group("plain56", [13.0, 12.6, 13.5]),
        group("resnet110", [6.5, 6.6, 6.3], "B"), group("plain110", [16.0, 15.2, 17.1]),
    ])
    pairs = [(d.first, d.second) for d in result.differences]
    assert pairs == [("resnet20-A", "plain20"), ("resnet20-B", "resnet20-A"), ("resnet20-C", "resnet20-A"),
                     ("resnet56-A", "plain56"), ("resnet110-B", "plain110")]
    b_vs_a = difference(result, "resnet20-B", "resnet20-A")
    assert b_vs_a.label == "ResNet (B) vs ResNet (A)" and "Table 3" in b_vs_a.paper
    stand_in = difference(result, "resnet110-B", "plain110")
    assert "ResNet (B) stands in: no option-A group at depth 110" in result.sentences()[4]
    assert stand_in.label == "ResNet (B) vs plain"
    assert [t.family for t in result.trends] == ["plain", "ResNet (A)", "ResNet (B)", "ResNet (C)"]
    assert trend(result, "ResNet (C)").note == "one depth only (20), so no depth trend"


def test_a_flagged_group_is_still_compared_and_its_sentence_says_so() -> None:
    result = answer([group("resnet56", [6.8, 7.0, 7.2]), group("plain56", [9.7, 10.0, 10.3], flags=CHOICE_FLAG),
                     group("plain20", [9.0, 9.1, 8.9])])
    gap = difference(result, "resnet56-A", "plain56")
    assert gap.significant and gap.flags == ("plain56: no trial trained all 64,000 iterations",)
    assert result.sentences()[0].endswith("(flagged: plain56: no trial trained all 64,000 iterations).")
    assert "(flagged: plain56: no trial trained all 64,000 iterations)" in trend(result, "plain").sentence(0.95)
    assert "flagged" not in trend(result, "ResNet (A)").sentence(0.95)


def test_seeds_that_do_not_vary_give_an_interval_without_width() -> None:
    gap = difference(answer([group("resnet20", [8.0, 8.0]), group("plain20", [9.0, 9.0])]), "resnet20-A", "plain20")
    assert (gap.mean, gap.low, gap.high, gap.significant) == (-1.0, -1.0, -1.0, True)
    assert "did not vary" in gap.note


def test_sentences_are_one_line_each_and_carry_the_dataclasses_numbers() -> None:
    result = answer(CLEAN)
    sentences = result.sentences()
    assert len(sentences) == len(result.differences) + len(result.trends) == 3 + 2
    for line in sentences:
        assert "\n" not in line and line.endswith(".") and " points" in line
    for d, line in zip(result.differences, sentences):
        assert d.mean is not None and d.low is not None and d.high is not None
        bounds = (-d.high, -d.low) if d.mean < 0 else (d.low, d.high)
        assert f"is {abs(d.mean):.2f} points {'better' if d.mean < 0 else 'worse'}" in line
        assert f"95% CI {bounds[0]:.2f} to {bounds[1]:.2f}, {d.n_first}" in line
        assert line.startswith(f"At depth {d.depth}, ")
        assert ("): significant" if d.significant else "): not significant") in line
    for t, line in zip(result.trends, sentences[len(result.differences):]):
        assert t.slope is not None and t.low is not None and t.high is not None
        assert f"slope {t.slope:+.2f} points" in line and f"95% CI {t.low:.2f} to {t.high:.2f}" in line
        assert f"{t.n} seeds over depths 20, 56, 110" in line
    gap = difference(result, "resnet56-A", "plain56")
    assert gap.low is not None and gap.high is not None
    assert sentences[1] == (f"At depth 56, ResNet (A) is 3.00 points better (lower test error) than plain (95% CI "
                            f"{-gap.high:.2f} to {-gap.low:.2f}, 3 seeds each): significant; paper (Fig. 6, Table 6): "
                            "ResNet better.")


def test_as_dict_is_json_with_the_sign_convention() -> None:
    result = answer(CLEAN)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["confidence"] == 0.95 and "first minus second" in data["sign"]
    assert data["sentences"] == result.sentences()
    gap = next(d for d in data["differences"] if d["first"] == "resnet56-A")
    assert gap["mean"] == pytest.approx(-3.0) and gap["better"] == "resnet56-A" and gap["significant"] is True
    assert [t["verdict"] for t in data["trends"]] == ["gets worse with depth", "gets better with depth"]
