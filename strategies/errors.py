"""Errors raised by the portfolio strategies; all are ``ValueError`` subclasses via InputError."""

from __future__ import annotations

from kronos_alpha.inference.panel import InputError
from kronos_alpha.inference.settings import SettingsError, check_integer, check_real


class StrategyInputError(InputError):
    """A signal, panel or weight book that cannot be used as given."""


class UniverseTooSmallError(StrategyInputError):
    """Fewer instruments with a score on a date than the book needs (K, or 2K long-short)."""


class FactorMatrixError(StrategyInputError):
    """The factor exposure matrix on a date is all-NaN or singular (rank deficient)."""


class InfeasibleWeightsError(StrategyInputError):
    """The weight constraints cannot be met together, or the solver did not reach optimality."""


def check_numbers(
    integers: dict | None = None, reals: dict | None = None, error=StrategyInputError
) -> None:
    """``{name: (value, least[, most])}``: integers in [least, most], finite reals at least
    ``least`` (None: any finite value); settings' checks, raised as ``error`` naming the field."""
    try:
        for name, (v, *bounds) in (integers or {}).items():
            check_integer(name, v, *bounds)
        for name, (v, least) in (reals or {}).items():
            if check_real(name, v) < (-float("inf") if least is None else least):
                raise SettingsError(f"{name} must be at least {least}, got {v}")
    except SettingsError as exc:
        raise error(str(exc)) from None
