"""Dosing event tables: NONMEM's dosing language as padded, vmappable arrays.

One row per dose; each subject has its own list of any length, padded with masked rows
to a bucket size so that a new regimen length rarely means a new compilation. ADDL is
expanded into explicit doses when the table is built; SS=1 doses keep their interval
and are resolved to steady state by the engines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

__all__ = ["Dose", "DosingEvents", "EventError", "as_dose", "bucket_size"]


class EventError(ValueError):
    """A dosing record is invalid."""


@dataclass(frozen=True)
class Dose:
    """One dosing record, in the NONMEM sense: ``Dose(time, amount, compartment=..., ...)``.

    Only ``time`` and ``amount`` are positional; every other field is named, so a rate
    cannot be taken for a compartment or a duration for a rate (``Dose(72, 200, 1, 1.0)``
    is a ``TypeError``).

    Attributes
    ----------
    time
        Time of the dose, h (before any lag time of the compartment).
    amount
        Amount, mg (before bioavailability).
    compartment
        0-based compartment index (NONMEM ``CMT`` − 1); ``model.route_compartment("oral")``
        or ``model.route_compartment("iv")`` gives the right one for a model.
    rate
        Zero-order infusion rate, mg/h; 0 for a bolus (NONMEM ``RATE``).
    duration
        Infusion duration, h; an alternative to ``rate`` (at most one of them > 0).
    steady_state
        NONMEM ``SS=1``: the system is reset to steady state of this dose every ``interval``.
    interval
        Dosing interval, h (NONMEM ``II``): for ``steady_state`` and ``additional``.
    additional
        Number of further doses every ``interval`` (NONMEM ``ADDL``).

    Examples
    --------
    >>> Dose(0.0, 1000.0, compartment=1, duration=1.0)  # 1 g over 1 h into compartment 1
    Dose(time=0.0, amount=1000.0, compartment=1, rate=0.0, duration=1.0, steady_state=False, interval=0.0, additional=0)
    >>> Dose(72.0, 200.0, 1, 1.0)
    Traceback (most recent call last):
    TypeError: Dose.__init__() takes 3 positional arguments but 5 were given
    """

    time: float
    amount: float
    _: KW_ONLY
    compartment: int
    rate: float = 0.0
    duration: float = 0.0
    steady_state: bool = False
    interval: float = 0.0
    additional: int = 0

    def replace(self, **changes: object) -> Dose:
        """A copy with some fields changed (``dose.replace(time=12.0)``)."""
        return dataclasses.replace(self, **changes)


def as_dose(value: object, where: str = "dose") -> Dose:
    """``value`` if it is a :class:`Dose`, else an :class:`EventError` saying how to write one.

    A bare tuple is refused: its fields after time and amount (compartment, rate,
    duration, ...) would be taken by position, the mistake :class:`Dose` prevents.
    """
    if isinstance(value, Dose):
        return value
    raise EventError(
        f"`{where}` must be a Dose, got {type(value).__name__} {value!r}; write "
        "Dose(time, amount, compartment=..., rate=..., ...) (the fields after time and amount "
        "are named)"
    )


def bucket_size(n: int, minimum: int = 4) -> int:
    """Smallest power of two ≥ ``n`` (and ≥ ``minimum``): padded sizes reuse compilations."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _check_dose(d: Dose, where: str) -> None:
    def bad(field: str, value: object, expected: str, fix: str) -> EventError:
        return EventError(f"`{where}.{field}` {expected}, got {value!r}; {fix}")

    for field in ("time", "amount", "rate", "duration", "interval"):
        value = getattr(d, field)
        if not np.isfinite(value):
            raise bad(field, value, "must be a finite number", "give a number")
    if d.time < 0:
        raise bad("time", d.time, "must be ≥ 0 h", "shift the time origin to the first dose")
    if d.amount < 0:
        raise bad("amount", d.amount, "must be ≥ 0 mg", "give the dose as a positive amount")
    if d.rate < 0:
        raise bad("rate", d.rate, "must be ≥ 0 mg/h (0 = bolus)", "give a positive infusion rate")
    if d.duration < 0:
        raise bad(
            "duration", d.duration, "must be ≥ 0 h (0 = bolus)", "give a positive infusion duration"
        )
    if d.rate > 0 and d.duration > 0:
        raise bad(
            "duration",
            d.duration,
            "must be 0 when `rate` is given",
            "give either the rate or the duration of the infusion, not both",
        )
    if d.compartment < 0:
        raise bad(
            "compartment", d.compartment, "must be ≥ 0 (0-based; NONMEM CMT − 1)", "check CMT"
        )
    if d.additional < 0 or int(d.additional) != d.additional:
        raise bad(
            "additional", d.additional, "must be a whole number ≥ 0", "give ADDL as 0, 1, 2, ..."
        )
    if (d.steady_state or d.additional > 0) and d.interval <= 0:
        raise bad(
            "interval",
            d.interval,
            "must be > 0 h for steady-state or additional doses",
            "give the dosing interval II",
        )
    infusion_h = d.duration if d.duration > 0 else (d.amount / d.rate if d.rate > 0 else 0.0)
    if d.steady_state and infusion_h > d.interval:
        raise bad(
            "duration",
            infusion_h,
            f"(infusion time, h) must not exceed the dosing interval {d.interval} h at steady state",
            "shorten the infusion or lengthen the interval",
        )


class DosingEvents(eqx.Module):
    """Padded dosing table, shape ``(subject, event)`` for every field.

    Build it with :meth:`from_doses` (one list of :class:`Dose` per subject) or
    :meth:`repeated`; padded rows have ``mask == False`` and are ignored.

    Examples
    --------
    >>> ev = DosingEvents.from_doses([[Dose(0.0, 100.0, compartment=0, interval=12.0, additional=2)]])
    >>> ev.time.shape, [float(t) for t in ev.time[0, :3]]
    ((1, 4), [0.0, 12.0, 24.0])
    """

    time: Float[Array, "subject event"]
    amount: Float[Array, "subject event"]
    compartment: Int[Array, "subject event"]
    rate: Float[Array, "subject event"]
    duration: Float[Array, "subject event"]
    steady_state: Bool[Array, "subject event"]
    interval: Float[Array, "subject event"]
    mask: Bool[Array, "subject event"]

    @property
    def n_subjects(self) -> int:
        return self.time.shape[0]

    @property
    def n_events(self) -> int:
        return self.time.shape[1]

    @classmethod
    def from_doses(
        cls, doses: Sequence[Sequence[Dose]], *, pad_to: int | None = None
    ) -> DosingEvents:
        """Build the table from one list of doses per subject (ADDL expanded, sorted by time).

        Parameters
        ----------
        doses
            One list of :class:`Dose` per subject: ``[[Dose(...), ...], [Dose(...)], ...]``;
            a single subject is ``[[Dose(...), Dose(...)]]``. A flat list of doses is an
            :class:`EventError` (it would be ambiguous: one subject with several doses, or
            several subjects with one dose each).
        pad_to
            Width of the table (default: the next bucket size of the longest regimen).

        Raises
        ------
        EventError
            For a flat list, an entry that is not a :class:`Dose`, or an invalid dose.
        """
        if isinstance(doses, Dose) or (
            isinstance(doses, Sequence) and any(isinstance(d, Dose) for d in doses)
        ):
            raise EventError(
                "`doses` must be one list of Dose per subject, e.g. [[Dose(0, 100, "
                "compartment=1), Dose(12, 100, compartment=1)]] for one subject; got a flat "
                "list of Dose; wrap it in a list for one subject ([doses]), or give one list "
                "per subject ([[dose] for dose in doses] for one dose each)"
            )
        expanded: list[list[Dose]] = []
        for i, subject_doses in enumerate(doses):
            if not isinstance(subject_doses, Sequence):
                raise EventError(
                    f"`doses[{i}]` must be the list of Dose of subject {i}, got "
                    f"{type(subject_doses).__name__} {subject_doses!r}; give one list of Dose "
                    "per subject"
                )
            rows: list[Dose] = []
            for j, d in enumerate(subject_doses):
                _check_dose(as_dose(d, f"doses[{i}][{j}]"), f"subject[{i}].doses[{j}]")
                rows.append(d.replace(additional=0))
                rows.extend(
                    d.replace(time=d.time + k * d.interval, steady_state=False, additional=0)
                    for k in range(1, int(d.additional) + 1)
                )
            rows.sort(key=lambda r: r.time)  # stable: same-time records keep their order
            expanded.append(rows)
        n_max = max((len(r) for r in expanded), default=0)
        width = pad_to if pad_to is not None else bucket_size(n_max)
        if width < n_max:
            raise EventError(f"`pad_to` must be ≥ the longest regimen ({n_max} doses), got {width}")
        n = len(expanded)
        arr = {f: np.zeros((n, width)) for f in ("time", "amount", "rate", "duration", "interval")}
        cmt = np.zeros((n, width), dtype=np.int32)
        ss = np.zeros((n, width), dtype=bool)
        mask = np.zeros((n, width), dtype=bool)
        for i, rows in enumerate(expanded):
            for j, d in enumerate(rows):
                for f in arr:
                    arr[f][i, j] = getattr(d, f)
                cmt[i, j], ss[i, j], mask[i, j] = d.compartment, d.steady_state, True
        return cls(
            time=jnp.asarray(arr["time"]),
            amount=jnp.asarray(arr["amount"]),
            compartment=jnp.asarray(cmt),
            rate=jnp.asarray(arr["rate"]),
            duration=jnp.asarray(arr["duration"]),
            steady_state=jnp.asarray(ss),
            interval=jnp.asarray(arr["interval"]),
            mask=jnp.asarray(mask),
        )

    @classmethod
    def repeated(
        cls,
        amount: float,
        interval: float,
        n_doses: int,
        *,
        compartment: int | None = None,
        n_subjects: int = 1,
        start: float = 0.0,
        rate: float = 0.0,
        duration: float = 0.0,
    ) -> DosingEvents:
        """The same regimen (``n_doses`` doses every ``interval`` h) for ``n_subjects`` subjects.

        Parameters
        ----------
        amount, interval, n_doses
            mg per dose, h between doses, number of doses.
        compartment
            Required: the compartment the doses go into, best named by route with the
            model, ``model.route_compartment("oral")`` (the depot) or
            ``model.route_compartment("iv")`` (central). There is no default: compartment
            0 is the depot of an oral model but the central compartment of an IV one.
        n_subjects, start, rate, duration
            Subjects sharing the table; time of the first dose, h; infusion rate, mg/h, or
            duration, h (0: bolus).

        Raises
        ------
        EventError
            Without ``compartment``, or for an invalid dose.

        Examples
        --------
        >>> from twinsim.priors import one_compartment
        >>> model = one_compartment(absorption="first_order")
        >>> ev = DosingEvents.repeated(100.0, 12.0, 3, compartment=model.route_compartment("oral"))
        >>> [float(t) for t in ev.time[0, :3]], int(ev.compartment[0, 0])
        ([0.0, 12.0, 24.0], 0)
        """
        if compartment is None:
            raise EventError(
                "`DosingEvents.repeated` needs `compartment=`: the compartment the doses go "
                "into, e.g. compartment=model.route_compartment('oral') (depot) or "
                "model.route_compartment('iv') (central); there is no default because "
                "compartment 0 is the depot of an oral model but the central compartment of "
                "an IV one"
            )
        if n_doses < 1:
            raise EventError(f"`n_doses` must be ≥ 1, got {n_doses}; give the number of doses")
        dose = Dose(
            start,
            amount,
            compartment=compartment,
            rate=rate,
            duration=duration,
            interval=interval if n_doses > 1 else 0.0,
            additional=n_doses - 1,
        )
        one = cls.from_doses([[dose]])
        return one.broadcast(n_subjects)

    def broadcast(self, n_subjects: int) -> DosingEvents:
        """Repeat a one-subject table for ``n_subjects`` subjects."""
        if self.n_subjects != 1:
            raise EventError(
                f"only a one-subject table can be broadcast, this one has {self.n_subjects}"
            )
        return DosingEvents(
            **{
                f: jnp.repeat(getattr(self, f), n_subjects, axis=0)
                for f in self.__dataclass_fields__
            }
        )

    def subset(self, index: Array | np.ndarray | slice) -> DosingEvents:
        """Rows (subjects) ``index`` of the table."""
        return DosingEvents(**{f: getattr(self, f)[index] for f in self.__dataclass_fields__})

    def to_doses(self) -> list[list[Dose]]:
        """Back to plain records (ADDL already expanded), one list per subject."""
        host = {f: np.asarray(getattr(self, f)) for f in self.__dataclass_fields__}
        out: list[list[Dose]] = []
        for i in range(self.n_subjects):
            rows = []
            for j in np.flatnonzero(host["mask"][i]):
                rows.append(
                    Dose(
                        float(host["time"][i, j]),
                        float(host["amount"][i, j]),
                        compartment=int(host["compartment"][i, j]),
                        rate=float(host["rate"][i, j]),
                        duration=float(host["duration"][i, j]),
                        steady_state=bool(host["steady_state"][i, j]),
                        interval=float(host["interval"][i, j]),
                        additional=0,
                    )
                )
            out.append(rows)
        return out
