"""The claims record: what a chapter reproduces, measured here, and whether it holds.

A claim names what the paper says (its value or statement), what this code measured, the
criterion it is judged by, and the scale it was measured at. ``holds`` is computed by the
code that measured it, never typed in. One table renders it as HTML (notebooks,
dashboards), plain text (terminal) and JSON (tools).

The common shapes, so a chapter's ``claims()`` is a short list: :func:`claim_below` /
:func:`claim_above` (a bound, beyond z standard errors when ``se`` is given),
:func:`claim_band` (low <= x <= high), :func:`claim_within` (relative tolerance around a
target), :func:`claim_ordered` (a ranking, each pair judged by :func:`compare`: better,
worse or indistinguishable given standard errors), :func:`claim_parts_within` (several
estimates that must each be within tolerance of their exact values, beyond their noise);
:func:`replica_z` is the margin for a standard error from few independent replicas.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class Claim:
    """One checkable claim.

    name: short label; paper: the paper's value or statement; measured: the value found
    here (a number, or text); criterion: how it is judged ("< 0.05", "within 10% of the
    paper"); holds: the verdict of that criterion; scale: tiny / cpu / gpu.
    """

    name: str
    paper: str
    measured: float | str
    criterion: str
    holds: bool
    scale: str
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.holds, bool):  # numpy bools and None would pass silently
            raise TypeError(f"claim {self.name!r}: holds must be a bool, got {self.holds!r}")
        if isinstance(self.measured, float) and not math.isfinite(self.measured):
            object.__setattr__(self, "holds", False)  # a NaN measurement never holds

    @property
    def measured_text(self) -> str:
        if isinstance(self.measured, float):
            return f"{self.measured:.4g}"
        return str(self.measured)


def _beyond(se: float, z: float) -> str:
    return f" by {z:g} SE (SE {se:.2g})" if se else ""


def _bound_claim(side: int) -> Callable[..., Claim]:
    """claim_below (side -1) or claim_above (side +1): one rule, the side of the bound.

    side +1 holds when the measurement's lower edge ``measured - z se`` lies above ``bound``;
    side -1 when its upper edge ``measured + z se`` lies below it. Strict unless
    ``inclusive``."""

    def claim(
        name: str,
        paper: str,
        measured: float,
        bound: float,
        scale: str,
        note: str = "",
        *,
        se: float = 0.0,
        z: float = 2.0,
        inclusive: bool = False,
    ) -> Claim:
        value = float(measured)
        gap = side * (value - side * z * se - bound)  # > 0 when the edge is on the right side
        holds = gap >= 0 if inclusive else gap > 0
        op = (">" if side > 0 else "<") + ("=" if inclusive else "")
        criterion = f"{op} {bound:.4g}{_beyond(se, z)}"
        return Claim(name, paper, value, criterion, bool(holds), scale, note)

    return claim


claim_below = _bound_claim(-1)
claim_below.__name__ = claim_below.__qualname__ = "claim_below"
claim_below.__doc__ = """Holds when ``measured + z se < bound`` (``<=`` with ``inclusive``):
below the bound beyond the noise when the standard error ``se`` of the measurement is given."""

claim_above = _bound_claim(+1)
claim_above.__name__ = claim_above.__qualname__ = "claim_above"
claim_above.__doc__ = """Holds when ``measured - z se > bound`` (``>=`` with ``inclusive``)."""


def claim_band(
    name: str, paper: str, measured: float, low: float, high: float, scale: str, note: str = ""
) -> Claim:
    """Holds when ``low <= measured <= high``."""
    value = float(measured)
    holds = bool(low <= value <= high)
    return Claim(name, paper, value, f"in [{low:.4g}, {high:.4g}]", holds, scale, note)


def claim_within(
    name: str,
    paper: str,
    measured: float,
    target: float,
    rel_tol: float,
    scale: str,
    note: str = "",
) -> Claim:
    """A claim that holds when ``|measured - target| <= rel_tol * |target|``."""
    value = float(measured)
    holds = bool(abs(value - target) <= rel_tol * abs(target))
    return Claim(name, paper, value, f"within {rel_tol:.0%} of {target:.4g}", holds, scale, note)


Verdict = Literal["better", "worse", "indistinguishable"]


def compare(
    a: float,
    b: float,
    se_a: float = 0.0,
    se_b: float = 0.0,
    *,
    z: float = 2.0,
    lower_is_better: bool = True,
) -> Verdict:
    """Is a better than b beyond the noise? With margin m = z sqrt(se_a^2 + se_b^2) and
    d = b - a (a - b when higher is better): "better" if d > m, "worse" if d < -m, else
    "indistinguishable" (also when either value is NaN)."""
    margin = z * math.hypot(se_a, se_b)
    d = (b - a) if lower_is_better else (a - b)
    if d > margin:
        return "better"
    if d < -margin:
        return "worse"
    return "indistinguishable"


def claim_ordered(
    name: str,
    paper: str,
    values: Mapping[str, float],
    scale: str,
    note: str = "",
    *,
    ses: Mapping[str, float] | None = None,
    z: float = 2.0,
    lower_is_better: bool = True,
) -> Claim:
    """``values`` {label: value} listed best first: holds when each one is "better" than
    the next by :func:`compare` (beyond z combined standard errors ``ses`` when given).

    ``measured`` reads "a 0.1 < b 0.2 < c 0.3"; a pair that is not "better" is named.
    """
    if len(values) < 2:
        raise ValueError(f"an ordering needs at least two values, got {len(values)}")
    se = dict.fromkeys(values, 0.0) | dict(ses or {})
    labels = list(values)
    sign = " < " if lower_is_better else " > "
    text = sign.join(f"{k} {values[k]:.4g}" + (f" +- {se[k]:.2g}" if se[k] else "") for k in labels)
    verdicts = [
        (a, b, compare(values[a], values[b], se[a], se[b], z=z, lower_is_better=lower_is_better))
        for a, b in zip(labels[:-1], labels[1:], strict=True)
    ]
    failed = [f"{a} vs {b}: {v}" for a, b, v in verdicts if v != "better"]
    crit = "strictly " + ("increasing" if lower_is_better else "decreasing")
    if ses:
        crit = f"each better than the next by {z:g} combined SE"
    note = "; ".join(filter(None, [*failed, note]))
    return Claim(name, paper, text, crit, not failed, scale, note)


def replica_z(replicas: int) -> float:
    """The two-sided 95% Student t quantile for ``replicas`` - 1 degrees of freedom: the
    margin, in standard errors, of a claim whose standard error is the spread of so few
    independent replicas (2.36 for 8, 12.7 for 2; z = 2 would understate it); inf below 2."""
    from scipy.special import stdtrit  # t.ppf's kernel; scipy.stats takes ~1 s to import

    return float(stdtrit(replicas - 1, 0.975)) if replicas > 1 else math.inf


def claim_parts_within(
    name: str,
    paper: str,
    parts: Mapping[str, tuple[float, float, float]],
    rel_tol: float,
    scale: str,
    note: str = "",
    *,
    z: float = 2.0,
) -> Claim:
    """One row for estimates that must all be right, ``parts`` {label: (measured, se,
    exact)}: holds when every |measured - exact| + z se <= rel_tol |exact|, so neither noise
    nor a wrong split between parts (a right total from two wrong halves) can pass.
    ``measured`` is the worst |relative error|."""
    rel = {k: (v - e) / abs(e) for k, (v, _, e) in parts.items()}
    holds = all(abs(v - e) + z * se <= rel_tol * abs(e) for v, se, e in parts.values())
    text = "; ".join(
        f"{k} {v:.4g} +- {se:.2g} (exact {e:.4g}, {rel[k]:+.1%})" for k, (v, se, e) in parts.items()
    )
    crit = f"each |measured - exact| + {z:g} SE <= {rel_tol:.0%} of exact ({', '.join(parts)})"
    worst, note = max(abs(r) for r in rel.values()), "; ".join(filter(None, [text, note]))
    return Claim(name, paper, worst, crit, bool(holds), scale, note)


def all_hold(claims: Sequence[Claim]) -> bool:
    return all(c.holds for c in claims)


def to_json(claims: Sequence[Claim]) -> str:
    """A JSON list of claims (every field, plus ``measured_text``)."""
    return json.dumps([{**asdict(c), "measured_text": c.measured_text} for c in claims], indent=1)


def to_text(claims: Sequence[Claim], title: str = "") -> str:
    """A fixed-width table for the terminal; a failing claim reads NO."""
    head = ("claim", "paper", "measured", "criterion", "holds", "scale")
    rows = [
        (c.name, c.paper, c.measured_text, c.criterion, "yes" if c.holds else "NO", c.scale)
        for c in claims
    ]
    widths = [min(48, max(len(str(r[i])) for r in [head, *rows])) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        pairs = zip(row, widths, strict=True)
        cells = [str(v)[: w - 1] + "…" if len(str(v)) > w else str(v) for v, w in pairs]
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [title] if title else []
    lines += [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    return "\n".join(lines)


def to_html(claims: Sequence[Claim], title: str = "") -> str:
    """An HTML table; a claim that does not hold is marked in red with its measured value."""
    esc = html.escape
    head = "".join(
        f"<th style='text-align:left'>{h}</th>"
        for h in ("claim", "paper", "measured here", "criterion", "holds?", "scale")
    )
    rows = []
    for c in claims:
        verdict = (
            "<span style='color:#1a7f37'>&#10004; yes</span>"
            if c.holds
            else "<span style='color:#b00020;font-weight:bold'>&#10008; NO</span>"
        )
        note = f"<br><small>{esc(c.note)}</small>" if c.note else ""
        rows.append(
            f"<tr><td>{esc(c.name)}{note}</td><td>{esc(c.paper)}</td>"
            f"<td>{esc(c.measured_text)}</td><td>{esc(c.criterion)}</td>"
            f"<td>{verdict}</td><td>{esc(c.scale)}</td></tr>"
        )
    caption = f"<caption style='text-align:left'><b>{esc(title)}</b></caption>" if title else ""
    return (
        f"<table class='pflow-claims'>{caption}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
