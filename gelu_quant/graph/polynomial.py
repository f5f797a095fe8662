"""Small multivariate polynomials with float coefficients, for recognising GELU formulas.

Discovery evaluates the sub-graph under a candidate node symbolically: every Add, Sub, Mul, Div
by a constant, Neg and Pow by a small integer becomes polynomial arithmetic over a few *atoms*
(the GELU input ``x`` and the output ``T`` of its Erf/Tanh/Sigmoid). Two spellings of the same
formula — ``0.5*x*(1+erf)``, ``x*(0.5+0.5*erf)``, ``(x*(erf+1))/2`` — give the same polynomial,
so one comparison replaces a list of operand orders and associations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Monomial = tuple[int, ...]
"""Exponent of each atom, e.g. ``(1, 1)`` is ``x·T``."""

MAX_DEGREE = 6
"""Total degree beyond which a polynomial is refused (no GELU spelling needs more)."""


class PolynomialError(ValueError):
    """An operation that leaves the small-polynomial world (degree too high, division by x)."""


class Poly:
    """An immutable polynomial over ``nvars`` atoms with float coefficients."""

    __slots__ = ("nvars", "terms")

    def __init__(self, nvars: int, terms: Mapping[Monomial, float] | None = None) -> None:
        self.nvars = nvars
        self.terms: dict[Monomial, float] = {m: c for m, c in (terms or {}).items() if c != 0.0}

    @classmethod
    def const(cls, nvars: int, c: float) -> Poly:
        return cls(nvars, {(0,) * nvars: c})

    @classmethod
    def atom(cls, nvars: int, i: int) -> Poly:
        return cls(nvars, {tuple(1 if j == i else 0 for j in range(nvars)): 1.0})

    def degree(self) -> int:
        return max((sum(m) for m in self.terms), default=0)

    def constant_value(self) -> float | None:
        """The value if this polynomial is a constant, else None."""
        if all(sum(m) == 0 for m in self.terms):
            return self.terms.get((0,) * self.nvars, 0.0)
        return None

    def __add__(self, other: Poly) -> Poly:
        t = dict(self.terms)
        for m, c in other.terms.items():
            t[m] = t.get(m, 0.0) + c
        return Poly(self.nvars, t)

    def __neg__(self) -> Poly:
        return Poly(self.nvars, {m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Poly) -> Poly:
        return self + (-other)

    def __mul__(self, other: Poly) -> Poly:
        t: dict[Monomial, float] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(a + b for a, b in zip(m1, m2, strict=True))
                t[m] = t.get(m, 0.0) + c1 * c2
        p = Poly(self.nvars, t)
        if p.degree() > MAX_DEGREE:
            raise PolynomialError(f"degree {p.degree()} is above {MAX_DEGREE}")
        return p

    def scale(self, k: float) -> Poly:
        return Poly(self.nvars, {m: c * k for m, c in self.terms.items()})

    def power(self, n: int) -> Poly:
        if n < 0 or n > MAX_DEGREE:
            raise PolynomialError(f"exponent {n} is not a small non-negative integer")
        out = Poly.const(self.nvars, 1.0)
        for _ in range(n):
            out = out * self
        return out

    def matches(self, target: Mapping[Monomial, float], rel_tol: float, abs_tol: float) -> bool:
        """True when every coefficient agrees with ``target`` within the tolerances."""
        keys: Iterable[Monomial] = set(self.terms) | set(target)
        return all(
            math.isclose(
                self.terms.get(m, 0.0), target.get(m, 0.0), rel_tol=rel_tol, abs_tol=abs_tol
            )
            for m in keys
        )

    def format(self, names: tuple[str, ...]) -> str:
        """Human-readable form, e.g. ``0.5·x + 0.5·x·T``."""
        if not self.terms:
            return "0"
        parts = []
        for m in sorted(self.terms, key=lambda m: (sum(m), m)):
            c = self.terms[m]
            factors = [names[i] if e == 1 else f"{names[i]}^{e}" for i, e in enumerate(m) if e > 0]
            if not factors:
                parts.append(f"{c:.6g}")
            elif c == 1.0:
                parts.append("·".join(factors))
            else:
                parts.append(f"{c:.6g}·" + "·".join(factors))
        return " + ".join(parts).replace("+ -", "- ")
