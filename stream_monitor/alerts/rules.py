"""Alert rules: which rule judges an observation, and its verdict.

The monitors judge every signal against their own thresholds (calibrated drift thresholds, the
performance baseline, ...). A configured :class:`~stream_monitor.config.AlertRule` may instead
judge a signal against an absolute threshold or a change relative to its baseline, silence it,
or route it (severity, labels, suggested action). The first matching rule wins; observations no
rule matches keep the monitor's verdict under the default rule.

Examples
--------
>>> from stream_monitor.config import AlertsConfig
>>> book = RuleBook(AlertsConfig(rules=[{"name": "age-mean", "feature": "age", "signal": "mean",
...                                      "mode": "relative", "threshold": 0.1}]))
>>> o = Observation("m", "data_drift", "age", "mean", 44.0, 0.0, False, True, 1.0, baseline=40.0)
>>> v = book.judge(o)
>>> v.rule, round(v.value, 3), v.threshold, v.breached
('age-mean', 0.1, 0.1, False)
>>> from dataclasses import replace
>>> book.judge(replace(o, value=45.0)).breached
True
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import AlertRule, AlertsConfig

__all__ = ["DEFAULT_RULE", "RuleBook", "Verdict"]

DEFAULT_RULE = AlertRule(name="default")
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's judgement of one observation (``value`` is the relative change for relative
    rules); ``strength`` orders the signals of an incident (how far past its threshold)."""

    rule: str
    value: float
    threshold: float
    baseline: float | None
    breached: bool
    cleared: bool
    strength: float


class RuleBook:
    """The configured rules, with the rule chosen for each signal remembered (bounded)."""

    def __init__(self, cfg: AlertsConfig) -> None:
        self.cfg = cfg
        self.rules: dict[str, AlertRule] = {r.name: r for r in cfg.rules}
        self._chosen: dict[tuple[str, str, str | None, str, str | None], AlertRule] = {}

    def rule_for(self, o: Observation) -> AlertRule:
        key = (o.model_id, o.kind, o.feature, o.signal, o.segment)
        hit = self._chosen.get(key)
        if hit is None:
            hit = next(
                (r for r in self.cfg.rules if r.matches(*key)),
                DEFAULT_RULE,
            )
            if len(self._chosen) >= _CACHE_SIZE:
                self._chosen.clear()
            self._chosen[key] = hit
        return hit

    def rule(self, name: str) -> AlertRule:
        """The rule named ``name``; the default rule for a name no longer configured."""
        return self.rules.get(name, DEFAULT_RULE)

    def judge(self, o: Observation) -> Verdict | None:
        """The verdict of the rule matching ``o``; None when the rule is disabled or cannot
        judge it (a relative rule on a signal without a baseline)."""
        return self.verdict(self.rule_for(o), o)

    def verdict(self, r: AlertRule, o: Observation) -> Verdict | None:
        """:meth:`judge` by rule ``r`` (the one :meth:`rule_for` chose for ``o``, looked up
        by the caller)."""
        if not r.enabled or math.isnan(o.value):
            return None  # a value that is not a number judges nothing
        # An overflow (an MAE of inf) breaches like the largest number, never vanishes.
        value = _finite(o.value)
        base = o.baseline if o.baseline is not None and math.isfinite(o.baseline) else None
        if r.mode == "calibrated":
            if not math.isfinite(o.threshold):
                return None  # an informational signal (a mean, a metric): only rules judge it
            return Verdict(
                r.name,
                value,
                o.threshold,
                base,
                o.breached,
                o.cleared,
                _strength(value, o.threshold, o.breached),
            )
        assert r.threshold is not None
        thr = r.threshold
        keep = self.cfg.resolve_ratio
        if r.mode == "absolute":
            v = value
            if r.direction == "above":
                res = (
                    thr - (1 - keep) * abs(thr)
                    if r.resolve_threshold is None
                    else r.resolve_threshold
                )
                return Verdict(r.name, v, thr, base, v > thr, v <= res, _ratio(v, thr))
            res = (
                thr + (1 - keep) * abs(thr) if r.resolve_threshold is None else r.resolve_threshold
            )
            return Verdict(r.name, v, thr, base, v < thr, v >= res, _ratio(thr, v))
        b = base
        if b is None or b == 0:
            return None
        change = _finite((value - b) / abs(b))
        size = {"above": change, "below": -change, "both": abs(change)}[r.direction]
        res = thr * keep if r.resolve_threshold is None else r.resolve_threshold
        return Verdict(r.name, change, thr, b, size > thr, size <= res, _ratio(size, thr))


def _finite(x: float) -> float:
    """``x``, with an infinity replaced by the largest finite float of its sign (alert events
    and snapshots carry finite numbers only)."""
    return math.copysign(sys.float_info.max, x) if math.isinf(x) else x


def _ratio(a: float, b: float) -> float:
    if b > 0 and math.isfinite(a):
        return _finite(a / b)
    return 0.0


def _strength(value: float, threshold: float, breached: bool) -> float:
    # The monitors' own rules breach above their thresholds, except the fairness ratios and
    # the p-value-like signals, which breach below: tell them apart by the verdict.
    if value > threshold or not breached:
        return _ratio(value, threshold)
    return _ratio(threshold, value)
