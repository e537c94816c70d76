"""Errors raised by the portfolio strategies; all are ``ValueError`` subclasses via InputError."""

from __future__ import annotations

from kronos_alpha.inference.panel import InputError


class StrategyInputError(InputError):
    """A signal, panel or weight book that cannot be used as given."""


class UniverseTooSmallError(StrategyInputError):
    """Fewer instruments with a score on a date than the book needs (K, or 2K long-short)."""


class FactorMatrixError(StrategyInputError):
    """The factor exposure matrix on a date is all-NaN or singular (rank deficient)."""


class InfeasibleWeightsError(StrategyInputError):
    """The weight constraints cannot be met together, or the solver did not reach optimality."""
