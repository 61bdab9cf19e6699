"""What every batch detector shares: feeding many streams, firing by firing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

__all__ = [
    "SHORT",
    "BatchDetector",
    "DetectorBase",
    "StrictState",
    "ValueDetector",
    "VersionedState",
    "feed_by_value",
    "feed_streams",
    "validated",
]

#: Batches up to this long are fed value by value: below it, the array pass costs more than a
#: plain loop (the per-window detectors see one value per call).
SHORT = 8


class BatchDetector(Protocol):
    """The interface of every detector in this package."""

    drift_detected: bool

    @property
    def params(self) -> dict[str, Any]: ...

    def _reset(self) -> None: ...

    def update_many(self, values: np.ndarray) -> list[int]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def _first_firing_by_value(self, x: Sequence[float]) -> int: ...


D = TypeVar("D", bound=BatchDetector)


class DetectorBase:
    """What ADWIN and Page-Hinkley share: parameters read back by name (``PARAMS``) and
    ``update_many`` as a one-stream call of the class's array pass."""

    #: Names of the constructor's arguments, kept as attributes of the same names.
    PARAMS: ClassVar[tuple[str, ...]] = ()

    #: The class and the parameters' values, set once by :meth:`_keep_params_key` (they never
    #: change after the constructor): :func:`feed_streams` groups detectors by it.
    _params_key: tuple[Any, ...]

    @property
    def params(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {k: getattr(self, k) for k in self.PARAMS}

    def _keep_params_key(self) -> None:
        """Record the grouping key; the constructor calls it once its parameters are set."""
        self._params_key = (type(self), *self.params.values())

    @staticmethod
    def _array_pass(dets: list[Any], xs: list[np.ndarray]) -> list[int]:
        raise NotImplementedError

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed ``values`` in order; return the indices of the values at which it fired.

        Every value counts (the caller drops missing ones). After a firing the detector starts
        afresh with the next value, exactly as a per-value loop over river's detector would.
        """
        return feed_streams([self], [values], type(self)._array_pass)[0]  # type: ignore[type-var]


def feed_streams(
    detectors: Sequence[D],
    batches: Sequence[np.ndarray],
    array_pass: Callable[[list[D], list[np.ndarray]], list[int]],
) -> list[list[int]]:
    """Feed ``batches[i]`` to ``detectors[i]``; return each stream's firing indices.

    ``array_pass(dets, xs)`` advances each detector over its values up to and including its
    first firing (or to the end) and returns that index per stream (-1: none); it sees
    detectors of equal parameters only, each with more than :data:`SHORT` values (shorter ones
    go value by value). A detector that fired starts afresh with the next value, as river's
    detectors do, so a stream that fired goes round again with the rest of its batch.
    """

    def first_firings(dets: list[D], xs: list[np.ndarray]) -> list[int]:
        hits = [-1] * len(dets)
        long = []
        for i, (det, x) in enumerate(zip(dets, xs, strict=True)):
            if len(x) <= SHORT:
                hits[i] = det._first_firing_by_value(x.tolist())
            else:
                long.append(i)
        if long:
            found = array_pass([dets[i] for i in long], [xs[i] for i in long])
            for i, at in zip(long, found, strict=True):
                hits[i] = at
        return hits

    fired: list[list[int]] = [[] for _ in detectors]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, det in enumerate(detectors):
        key = getattr(det, "_params_key", None) or (type(det), *det.params.values())
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        dets = [detectors[i] for i in members]
        xs = [np.asarray(batches[i], dtype=np.float64).ravel() for i in members]
        start = [0] * len(dets)
        active = [i for i, x in enumerate(xs) if len(x)]
        while active:
            for i in active:
                if dets[i].drift_detected:
                    dets[i]._reset()
                    dets[i].drift_detected = False
            hits = first_firings([dets[i] for i in active], [xs[i][start[i] :] for i in active])
            again = []
            for i, at in zip(active, hits, strict=True):
                if at < 0:
                    continue
                fired[members[i]].append(start[i] + at)
                dets[i].drift_detected = True
                start[i] += at + 1
                if start[i] < len(xs[i]):
                    again.append(i)
            active = again
    return fired


def feed_by_value(det: BatchDetector, values: Sequence[float]) -> list[int]:
    """Feed a few values (no NaNs) to one detector in plain Python; return where it fired.

    The same firings as :func:`feed_streams`, without its array set-up: for the per-window
    detectors, which see one value per call."""
    fired: list[int] = []
    start = 0
    while start < len(values):
        if det.drift_detected:
            det._reset()
            det.drift_detected = False
        at = det._first_firing_by_value(values[start:])
        if at < 0:
            break
        fired.append(start + at)
        det.drift_detected = True
        start += at + 1
    return fired


class ValueDetector(DetectorBase):
    """What the detectors fed value by value share (those of a model's error stream: one value
    per joined label): ``update_many`` runs ``_first_firing_by_value`` through
    :func:`feed_by_value`."""

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed ``values`` in order; return the indices of the values at which it fired.

        After a firing the detector starts afresh with the next value, exactly as a per-value
        loop over river's detector would.
        """
        return feed_by_value(self, np.asarray(values, dtype=float).ravel().tolist())  # type: ignore[arg-type]


class StrictState(BaseModel):
    """Fields of a detector's snapshot, checked strictly: no coercion (``1.0`` is not an int,
    ``"1"`` not a number), no unknown field, no infinity or NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class VersionedState(StrictState):
    """A detector's snapshot: its version ``v`` must be ``VERSION`` (a strict int, so ``1.0``
    and ``True`` are refused too)."""

    VERSION: ClassVar[int] = 1
    v: int

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != cls.VERSION:
            raise ValueError(f"unsupported snapshot version {v}")
        return v


S = TypeVar("S", bound=BaseModel)


def validated(model: type[S], d: Mapping[str, Any], what: str) -> S:
    """``d`` checked by ``model``; any problem is a ``ValueError`` naming ``what``."""
    try:
        return model.model_validate(dict(d) if isinstance(d, Mapping) else d)
    except ValidationError as e:
        raise ValueError(f"invalid {what} snapshot: {e}") from e
