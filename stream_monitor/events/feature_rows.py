"""A prediction's features as a row of a known layout, decoded without a dict.

A model's events almost always carry the same feature names. Once the decoder has seen them,
msgspec decodes each later event's ``features`` object straight into a struct of that layout
(:func:`row_type`; ``events/decode.py`` keeps one per layout, up to 65,536 names in all), a
:class:`FeatureRow`: one slot per name, the values as msgspec gives them in a dict (the same
types and checks), in about half the time of building the dict; and
``msgspec.structs.astuple`` reads a row's values in layout order in C, which is how the
monitor turns a batch into columns (``monitor/model.py``). An event whose features do not
fit the layout (a name missing, an unknown one) is decoded into a dict as before.

A ``FeatureRow`` is a read-only mapping of name -> value, equal to the dict it stands for.
Unlike that dict, it iterates in the layout's order, not in the order of the event's JSON
object (the same names, for an event whose producer wrote them in another order). A deep
copy or a pickle of one is that dict.

>>> import msgspec
>>> Row = row_type(("age", "country"), int | str | None)
>>> r = msgspec.json.decode(b'{"country": "fr", "age": 41}', type=Row)
>>> r["age"], r.get("income"), list(r), len(r), "country" in r
(41, None, ['age', 'country'], 2, True)
>>> r == {"age": 41, "country": "fr"}, r, msgspec.structs.astuple(r)
(True, {'age': 41, 'country': 'fr'}, (41, 'fr'))
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView, Mapping
from typing import Any, ClassVar

import msgspec

__all__ = ["FeatureRow", "row_type"]

_astuple = msgspec.structs.astuple


class FeatureRow(msgspec.Struct, frozen=True, gc=False, eq=False):
    """Base of the structs of :func:`row_type`: a read-only mapping of feature name -> value.

    Its values are JSON scalars (numbers, strings, booleans, nulls), which can hold no
    reference cycle: the garbage collector does not track rows (``gc=False``).
    """

    #: The feature names, in the layout's order.
    NAMES: ClassVar[tuple[str, ...]] = ()
    #: Name -> the struct's field (``f0``, ``f1``, ...), in the layout's order.
    FIELDS: ClassVar[dict[str, str]] = {}
    #: The names whose values are numbers or nulls in every row (typed so: a row with
    #: anything else there is refused).
    NUMERIC: ClassVar[frozenset[str]] = frozenset()

    def __getitem__(self, name: str) -> Any:
        return getattr(self, self.FIELDS[name])

    def get(self, name: str, default: Any = None) -> Any:
        field = self.FIELDS.get(name)
        return default if field is None else getattr(self, field)

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)

    def __contains__(self, name: object) -> bool:
        return name in self.FIELDS

    def keys(self) -> KeysView[str]:
        return self.FIELDS.keys()

    def values(self) -> tuple[Any, ...]:
        return _astuple(self)

    def items(self) -> Any:
        return self.as_dict().items()

    def as_dict(self) -> dict[str, Any]:
        """The dict this row stands for (names in the layout's order)."""
        return dict(zip(self.NAMES, _astuple(self), strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureRow):
            return self.as_dict() == other.as_dict()
        if isinstance(other, Mapping):
            return self.as_dict() == dict(other.items())
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        # needed: without it, msgspec's Struct answers != by identity, not from __eq__
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so unhashable like one

    def __repr__(self) -> str:
        return repr(self.as_dict())

    def __reduce__(self) -> tuple[Any, ...]:
        # a dynamic class cannot be pickled by name: deep copies and pickles are the dict
        return (dict, (self.as_dict(),))


Mapping.register(FeatureRow)


def row_type(
    names: tuple[str, ...],
    value_type: Any,
    numeric: frozenset[str] = frozenset(),
    numeric_type: Any = None,
) -> type[FeatureRow]:
    """A new :class:`FeatureRow` struct of the layout ``names`` (distinct names, in order),
    its values of ``value_type``, those of the names in ``numeric`` of ``numeric_type`` (a
    type of numbers or null): an event's ``features`` object with exactly these names, and
    values of these types, decodes into it (one with another name, without one of them, or a
    value of another type is refused).

    >>> Row = row_type(("a", "b"), int | str | None, frozenset({"a"}), int | None)
    >>> Row.NUMERIC, msgspec.json.decode(b'{"a": 1, "b": "x"}', type=Row)
    (frozenset({'a'}), {'a': 1, 'b': 'x'})
    >>> msgspec.json.decode(b'{"a": "1", "b": "x"}', type=Row)
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: Expected `int | null`, got `str` - at `$.a`
    """
    fields = [f"f{i}" for i in range(len(names))]
    numeric = numeric.intersection(names)
    return msgspec.defstruct(  # type: ignore[return-value]
        "FeatureRow",
        [
            (f, numeric_type if n in numeric else value_type)
            for f, n in zip(fields, names, strict=True)
        ],
        bases=(FeatureRow,),
        module=__name__,
        rename=dict(zip(fields, names, strict=True)),
        forbid_unknown_fields=True,
        frozen=True,
        eq=False,
        gc=False,
        namespace={
            "NAMES": names,
            "FIELDS": dict(zip(names, fields, strict=True)),
            "NUMERIC": numeric,
        },
    )
