"""The study's answer to the paper's questions, in plain sentences with their uncertainty.

He et al. 2015 ask three things of the CIFAR-10 nets (Sec. 4.2), and a study answers each from the test errors
of its final seeds (``GroupResult.test_errors``, one per seed, in %):

1. **Residual vs plain, per depth** (Fig. 6, Table 6): the test error of the ResNet with shortcut option A, the
   paper's CIFAR choice (Sec. 4.2), minus that of the plain net of the same depth. Where a depth has no option-A
   group, the first residual group there (B, then C) stands in, and the sentence says so.
2. **Shortcut options, per depth** (Table 3: on ImageNet B is slightly better than A, C marginally better than
   B): option B minus option A, and C minus A, where both groups exist at that depth.
3. **Depth trend, per family** (Fig. 6: plain nets get worse with depth; Table 6: ResNets get better, up to 110
   layers): the slope of an ordinary least-squares fit of every seed's test error against log2(depth).

Sign convention: every difference is *first minus second* test error, in percentage points, so a negative
difference means the first group is better (lower error); a positive slope means the family gets worse (higher
error) with depth. Sentences state the magnitude with the words "better"/"worse" and give the interval of
that magnitude: "ResNet (A) is 1.92 points better (lower test error) than plain (95% CI 1.10 to 2.74)" is the
signed difference -1.92 with interval -2.74 to -1.10.

The maths, in full:

* Two groups with test errors ``x`` (n1 seeds) and ``y`` (n2 seeds): Welch's interval for unequal variances,
  ``d = mean(x) - mean(y)``, ``se = sqrt(s1²/n1 + s2²/n2)`` with sample variances ``s²`` (ddof 1), degrees of
  freedom by Welch-Satterthwaite ``df = se⁴ / ((s1²/n1)²/(n1-1) + (s2²/n2)²/(n2-1))``, interval
  ``d ± t_{(1+c)/2, df} · se`` at confidence ``c``. Significant when the interval excludes 0 (the two-sided
  Welch test at level 1 - c). It needs at least 2 seeds per group.
* A family's points ``(log2 depth_i, error_i)`` over all seeds of its groups: slope
  ``b = Sxy / Sxx``, residual variance ``s² = SSE / (n - 2)``, ``se(b) = sqrt(s² / Sxx)``, interval
  ``b ± t_{(1+c)/2, n-2} · se(b)``, two-sided p-value ``2 · P(T_{n-2} > |b / se(b)|)``. It needs at least 3
  points over at least 2 depths. Seeds count as independent observations; ``b`` is points per doubling of depth.

A group whose numbers the study flagged (diverged, an early-stopped choice, chance level) is still compared; its
sentence carries ``(flagged: ...)``. Nothing here guesses: a comparison without enough seeds says what is missing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats

from resnet_core.options import SHORTCUT_OPTIONS
from study.report import GroupResult

SHORTCUT_ORDER = SHORTCUT_OPTIONS
"""Option A first: the paper's CIFAR choice (Sec. 4.2); B and C are the Table 3 alternatives."""
MIN_SEEDS = 2
"""Seeds per group a Welch interval needs (one seed has no spread)."""
MIN_POINTS = 3
"""Points an OLS slope with an interval needs (n - 2 >= 1 degrees of freedom)."""
MIN_DEPTHS = 2
NO_FINAL = "no final retraining: validation errors only, not compared"
PAPER_RESIDUAL_VS_PLAIN = "paper (Fig. 6, Table 6): ResNet better"
PAPER_SHORTCUT = {"B": "paper (Table 3, ImageNet): B slightly better than A",
                  "C": "paper (Table 3, ImageNet): C better than A, marginally better than B"}
PAPER_TREND_PLAIN = "paper (Fig. 6): plain nets get worse with depth"
PAPER_TREND_RESIDUAL = "paper (Fig. 6, Table 6, option A): ResNets get better with depth, up to 110 layers"


@dataclass(frozen=True)
class PaperClaims:
    """What the paper found for each comparison on one dataset: CIFAR-10 (Sec. 4.2) or ImageNet (Sec. 4.1)."""

    residual_vs_plain: str
    trend_plain: str
    trend_residual: str
    residual_vs_plain_at: dict[int, str] = field(default_factory=dict)
    """Depth-specific findings, where the paper gives the two figures."""

    def residual_vs_plain_at_depth(self, depth: int) -> str:
        return self.residual_vs_plain_at.get(depth, self.residual_vs_plain)


CIFAR_CLAIMS = PaperClaims(PAPER_RESIDUAL_VS_PLAIN, PAPER_TREND_PLAIN, PAPER_TREND_RESIDUAL)
IMAGENET_CLAIMS = PaperClaims(
    residual_vs_plain="paper (Table 2, ImageNet): ResNet better at 34 layers, about equal at 18",
    trend_plain="paper (Table 2, Fig. 4 left, ImageNet): plain-34 worse than plain-18 (28.54% vs 27.94% top-1)",
    trend_residual="paper (Tables 2-3, ImageNet): ResNets get better with depth (ResNet-18 27.88%, ResNet-34 25.03% "
                   "top-1 with option A; ResNet-152 21.43% with B)",
    residual_vs_plain_at={18: "paper (Table 2, ImageNet): about equal, 27.88% vs 27.94% top-1 (ResNet-18 converges "
                              "faster, Fig. 4)",
                          34: "paper (Table 2, ImageNet): ResNet better, 25.03% vs 28.54% top-1"},
)
PAPER_CLAIMS = {"cifar10": CIFAR_CLAIMS, "imagenet": IMAGENET_CLAIMS}
"""The paper's findings by dataset; a dataset without its own (CIFAR-100) is compared with the CIFAR-10 ones."""
WORSE, BETTER, FLAT, UNTESTED = ("gets worse with depth", "gets better with depth", "no significant trend",
                                 "not tested")


@dataclass(frozen=True)
class Difference:
    """``first`` minus ``second`` test error at one depth, in points (negative: ``first`` is better).

    ``mean``, ``low``, ``high`` and ``significant`` are None when the comparison could not be made; ``note``
    then says why (too few seeds, no final retraining). ``low``/``high`` bound the Welch interval of ``mean``.
    """

    label: str
    """What is compared, in words: ``ResNet (A) vs plain``, ``ResNet (B) vs ResNet (A)``."""
    depth: int
    first: str
    """The first group's name (``resnet56-A``)."""
    second: str
    mean: float | None
    low: float | None
    high: float | None
    n_first: int
    n_second: int
    significant: bool | None
    note: str = ""
    flags: tuple[str, ...] = ()
    """``group: reason`` for each flagged group of the two, shortened to the reason's first clause."""
    paper: str = ""
    """What the paper found for this comparison."""

    @property
    def better(self) -> str | None:
        """The group with the lower mean test error, or None when not compared or equal."""
        if self.mean is None or self.mean == 0:
            return None
        return self.first if self.mean < 0 else self.second

    def sentence(self, confidence: float) -> str:
        """One line, e.g. ``At depth 56, ResNet (A) is 1.92 points better (lower test error) than plain (95% CI
        1.10 to 2.74, 3 seeds each): significant; paper (Fig. 6, Table 6): ResNet better.``"""
        first, second = self.label.split(" vs ")
        head = f"At depth {self.depth}, "
        if self.mean is None or self.low is None or self.high is None:
            text = f"{head}{self.label} ({self.first} vs {self.second}): {self.note}"
        else:
            if self.mean < 0:
                size, bounds, word = -self.mean, (-self.high, -self.low), "better (lower test error)"
            else:
                size, bounds, word = self.mean, (self.low, self.high), "worse (higher test error)"
            ci = f"{_percent(confidence)} CI {bounds[0]:.2f} to {bounds[1]:.2f}, {_seeds(self.n_first, self.n_second)}"
            verdict = "significant" if self.significant else "not significant"
            extra = "".join(f"; {part}" for part in (self.note, self.paper) if part)
            text = f"{head}{first} is {size:.2f} points {word} than {second} ({ci}): {verdict}{extra}"
        return f"{text}{_flagged(self.flags)}."


@dataclass(frozen=True)
class Trend:
    """A family's test error against log2(depth): ``slope`` in points per doubling of depth (positive: worse).

    ``slope``, ``low``, ``high`` and ``p_value`` are None when the fit could not be made; ``verdict`` is then
    ``not tested`` and ``note`` says why."""

    family: str
    """``plain``, ``ResNet (A)``, ``ResNet (B)``, ..."""
    groups: tuple[str, ...]
    """The groups whose seeds were fitted."""
    slope: float | None
    low: float | None
    high: float | None
    p_value: float | None
    depths: tuple[int, ...]
    """The depths with at least one final test error."""
    n: int
    """Points fitted: one per final seed."""
    verdict: str
    """``gets worse with depth``, ``gets better with depth``, ``no significant trend`` or ``not tested``."""
    note: str = ""
    flags: tuple[str, ...] = ()
    paper: str = ""

    def sentence(self, confidence: float) -> str:
        """One line, e.g. ``plain nets get worse with depth: slope +0.85 points of test error per doubling of depth
        (95% CI 0.40 to 1.30, p = 0.002, 9 seeds over depths 20, 56, 110); paper (Fig. 6): ...``."""
        plural = ("plain", "plain nets") if self.family.startswith("plain") else ("ResNet", "ResNets")
        name = self.family.replace(*plural, 1)
        if self.slope is None or self.low is None or self.high is None or self.p_value is None:
            text = f"Depth trend of {name}: {self.note}"
        else:
            depths = ", ".join(str(d) for d in self.depths)
            fit = (f"slope {self.slope:+.2f} points of test error per doubling of depth ({_percent(confidence)} CI "
                   f"{self.low:.2f} to {self.high:.2f}, {_p(self.p_value)}, {self.n} seeds over depths {depths})")
            shown = {WORSE: "get worse with depth", BETTER: "get better with depth"}.get(
                self.verdict, "show no significant trend with depth")
            extra = "".join(f"; {part}" for part in (self.note, self.paper) if part)
            text = f"{name[0].upper()}{name[1:]} {shown}: {fit}{extra}"
        return f"{text}{_flagged(self.flags)}."


@dataclass(frozen=True)
class Answer:
    """The study's answer: per-depth differences (residual vs plain, then shortcuts) and per-family trends."""

    differences: tuple[Difference, ...]
    trends: tuple[Trend, ...]
    confidence: float = 0.95

    def sentences(self) -> list[str]:
        """One plain-English line per difference, then per trend; numbers in points with 2 decimals."""
        return ([d.sentence(self.confidence) for d in self.differences]
                + [t.sentence(self.confidence) for t in self.trends])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the confidence, the sign convention, every difference and trend, and the sentences."""
        return {
            "confidence": self.confidence,
            "sign": "difference = first minus second test error in points (negative: first is better, i.e. lower "
                    "error); slope = points of test error per doubling of depth (positive: worse with depth)",
            "differences": [{**asdict(d), "flags": list(d.flags), "better": d.better} for d in self.differences],
            "trends": [{**asdict(t), "groups": list(t.groups), "depths": list(t.depths), "flags": list(t.flags)}
                       for t in self.trends],
            "sentences": self.sentences(),
        }


def welch_interval(first: Sequence[float], second: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean(first) - mean(second), low, high)``: Welch's t interval for a difference of means with unequal
    variances (see the module docstring). Needs at least 2 values in each; with no spread in either, the
    interval is the point itself."""
    n1, n2 = len(first), len(second)
    if n1 < MIN_SEEDS or n2 < MIN_SEEDS:
        raise ValueError(f"Welch's interval needs at least {MIN_SEEDS} values per group, got {n1} and {n2}")
    diff = statistics.fmean(first) - statistics.fmean(second)
    v1, v2 = statistics.variance(first) / n1, statistics.variance(second) / n2  # squared standard errors
    se = math.sqrt(v1 + v2)
    if se == 0:
        return diff, diff, diff
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return diff, diff - half, diff + half


def ols_slope(x: Sequence[float], y: Sequence[float],
              confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(slope, low, high, p_value)`` of the least-squares line ``y = a + b x``: the t interval of ``b`` with
    ``n - 2`` degrees of freedom and the two-sided p-value of ``b = 0`` (see the module docstring)."""
    n = len(x)
    if n != len(y) or n < MIN_POINTS or len(set(x)) < 2:
        raise ValueError(f"an OLS slope needs at least {MIN_POINTS} points over 2 distinct x, got {n}")
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((xi - mx) ** 2 for xi in x)
    slope = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y)) / sxx
    intercept = my - slope * mx
    sse = sum((yi - intercept - slope * xi) ** 2 for xi, yi in zip(x, y))
    se = math.sqrt(sse / (n - 2) / sxx)
    if se == 0:  # the points lie on the line: no scatter to doubt the slope by
        return slope, slope, slope, 1.0 if slope == 0 else 0.0
    half = float(stats.t.ppf((1 + confidence) / 2, n - 2)) * se
    p_value = float(2 * stats.t.sf(abs(slope / se), n - 2))
    return slope, slope - half, slope + half, p_value


def answer(results: Sequence[GroupResult], confidence: float = 0.95, dataset: str = "cifar10") -> Answer:
    """The study's answer from its groups (any order): per depth, ResNet (A, else the residual group there) minus
    plain (Fig. 6, Table 6; on ImageNet Table 2) and B / C minus A (Table 3); per family, the depth trend (Fig. 6,
    Table 6; on ImageNet Tables 2-3). On ImageNet the errors compared are the top-1 test (val/) errors."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    claims = PAPER_CLAIMS.get(dataset, CIFAR_CLAIMS)
    differences: list[Difference] = []
    trends: list[Trend] = []
    for settings, families in _families(results).items():
        for depth in sorted({r.depth for by_depth in families.values() for r in by_depth.values()}):
            plain = families.get(None, {}).get(depth)
            residual = next((families[s][depth] for s in SHORTCUT_ORDER if depth in families.get(s, {})), None)
            if plain is not None and residual is not None:
                stand_in = _shortcut(residual)
                note = "" if stand_in == "A" else f"ResNet ({stand_in}) stands in: no option-A group at depth {depth}"
                differences.append(_compare(residual, plain, confidence, claims.residual_vs_plain_at_depth(depth),
                                            note))
            option_a = families.get("A", {}).get(depth)
            for option in SHORTCUT_ORDER[1:]:
                other = families.get(option, {}).get(depth)
                if option_a is not None and other is not None:
                    paper = PAPER_SHORTCUT.get(option, "not in the paper")
                    differences.append(_compare(other, option_a, confidence, paper))
        trends += [_trend(_family_name(shortcut, settings), list(families[shortcut].values()), confidence,
                          claims.trend_plain if shortcut is None else claims.trend_residual)
                   for shortcut in (None, *SHORTCUT_ORDER) if shortcut in families]
    return Answer(tuple(differences), tuple(trends), confidence)


Settings = tuple[tuple[str, Any], ...]


def _families(results: Sequence[GroupResult]) -> dict[Settings, dict[str | None, dict[int, GroupResult]]]:
    """crossed settings -> shortcut (None: plain) -> depth -> group: groups are compared only with groups of the
    same crossed settings (e.g. the same batch size). The first group wins where two share a family and depth. A
    residual group without a shortcut option has the CIFAR models' default, option A (Sec. 4.2)."""
    families: dict[Settings, dict[str | None, dict[int, GroupResult]]] = {}
    for r in results:
        families.setdefault(tuple(r.settings.items()), {}).setdefault(_shortcut(r), {}).setdefault(r.depth, r)
    return {settings: {key: dict(sorted(by_depth.items())) for key, by_depth in by_shortcut.items()}
            for settings, by_shortcut in families.items()}


def _family_name(shortcut: str | None, settings: Settings = ()) -> str:
    name = "plain" if shortcut is None else f"ResNet ({shortcut})"
    return name + "".join(f", {field} {value}" for field, value in settings)


def _shortcut(r: GroupResult) -> str | None:
    return (r.shortcut or "A").upper() if r.residual else None


def _name(r: GroupResult) -> str:
    return _family_name(_shortcut(r), tuple(r.settings.items()))


def _errors(r: GroupResult) -> list[float]:
    return [e for e in r.test_errors if math.isfinite(e)]


def _compare(first: GroupResult, second: GroupResult, confidence: float, paper: str, note: str = "") -> Difference:
    """``first`` minus ``second`` with Welch's interval, or a note on what is missing."""
    x, y = _errors(first), _errors(second)
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    notes = [note] if note else []
    missing = [r.group for r, errors in ((first, x), (second, y)) if not errors]
    if missing:
        notes.insert(0, NO_FINAL if len(missing) == 2 else f"{missing[0]} has {NO_FINAL}")
    elif len(x) < MIN_SEEDS or len(y) < MIN_SEEDS:
        notes.insert(0, f"{_seeds(len(x), len(y), 'final seed')}; at least {MIN_SEEDS} per group are needed for an "
                        f"interval (set train.final_seeds >= {MIN_SEEDS})")
    else:
        mean, low, high = welch_interval(x, y, confidence)
        if low == high:
            notes.append("the seeds' test errors did not vary: the interval has no width")
    return Difference(label=f"{_name(first)} vs {_name(second)}", depth=first.depth, first=first.group,
                      second=second.group, mean=mean, low=low, high=high, n_first=len(x), n_second=len(y),
                      significant=None if low is None or high is None else not low <= 0 <= high, note="; ".join(notes),
                      flags=_flags(first, second), paper=paper)


def _trend(family: str, groups: Sequence[GroupResult], confidence: float, paper: str) -> Trend:
    """The OLS slope of a family's per-seed test errors against log2(depth), or a note on what is missing."""
    used = [r for r in groups if _errors(r)]
    depths = tuple(r.depth for r in used)
    points = [(math.log2(r.depth), e) for r in used for e in _errors(r)]
    left_out = [r.group for r in groups if not _errors(r)]
    notes = [f"left out for {NO_FINAL.split(':')[0]}: {', '.join(left_out)}"] if left_out and used else []
    slope: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    verdict = UNTESTED
    if not used:
        notes = [NO_FINAL]
    elif len(groups) < MIN_DEPTHS:
        notes = [f"one depth only ({groups[0].depth}), so no depth trend"]
    elif len(depths) < MIN_DEPTHS or len(points) < MIN_POINTS:
        notes.insert(0, f"{_count(len(points), 'final test error')} over {_count(len(depths), 'depth')} "
                        f"({', '.join(str(d) for d in depths)}); a depth trend needs at least {MIN_POINTS} over at "
                        f"least {MIN_DEPTHS} depths")
    else:
        slope, low, high, p_value = ols_slope([p[0] for p in points], [p[1] for p in points], confidence)
        verdict = FLAT if low <= 0 <= high else (WORSE if slope > 0 else BETTER)
    return Trend(family=family, groups=tuple(r.group for r in used), slope=slope, low=low, high=high,
                 p_value=p_value, depths=depths, n=len(points), verdict=verdict, note="; ".join(notes),
                 flags=_flags(*used), paper=paper)


def _flags(*groups: GroupResult) -> tuple[str, ...]:
    """``group: reason`` per flag, the reason cut at its first colon and kept on one line."""
    return tuple(f"{r.group}: {' '.join(flag.split(':')[0].split())}" for r in groups for flag in r.flags)


def _flagged(flags: tuple[str, ...]) -> str:
    return f" (flagged: {'; '.join(flags)})" if flags else ""


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _seeds(n1: int, n2: int, noun: str = "seed") -> str:
    return f"{_count(n1, noun)} each" if n1 == n2 else f"{n1} and {_count(n2, noun)}"
