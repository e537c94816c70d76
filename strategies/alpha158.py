"""Qlib's Alpha158 with ``$vwap`` made explicit, and the provider-folder field checks it needs.

Lives in the strategies layer because the walk-forward's LightGBM baseline uses it; the Qlib
adapter re-exports it for workflow YAMLs (``module_path: kronos_alpha.adapters.qlib``).
"""

from __future__ import annotations

from pathlib import Path

from qlib.contrib.data.handler import Alpha158
from qlib.contrib.data.loader import Alpha158DL
from qlib.log import get_module_logger

from kronos_alpha.inference.panel import InputError

log = get_module_logger("kronos_alpha")  # Qlib's logger: shows up in qrun's output


def provider_folder(freq: str = "day") -> Path | None:
    """The local provider folder qlib.init was given, or None (e.g. a client/server setup)."""
    from qlib.config import C

    try:
        uri = C.dpm.get_data_uri(freq)
    except (AttributeError, KeyError, ValueError):
        return None
    path = Path(str(uri))
    return path if path.is_dir() else None


def has_field(field: str, freq: str = "day") -> bool | None:
    """Whether any instrument of the provider folder has this field (None: cannot tell)."""
    root = provider_folder(freq)
    if root is None:
        return None
    return next((root / "features").glob(f"*/{field}.{freq}.bin"), None) is not None


class Alpha158Checked(Alpha158):
    """Qlib's Alpha158, explicit about ``$vwap``.

    Alpha158's only vwap feature is ``VWAP0 = $vwap/$close``. On data without a vwap field
    (such as the CSI300 folder of this project) Qlib reads it as all-NaN without a word, and
    the column then either poisons ``Fillna``-style processors or drops rows. ``vwap="auto"``
    leaves VWAP0 out (157 features) with a warning when the provider folder has no vwap;
    ``"require"`` raises instead; ``"drop"`` always leaves it out.
    """

    def __init__(self, *args, vwap: str = "auto", **kwargs):
        if vwap not in ("auto", "require", "drop"):
            raise ValueError(f"vwap must be 'auto', 'require' or 'drop', got {vwap!r}")
        have = has_field("vwap", kwargs.get("freq", "day"))
        if vwap == "require" and have is False:
            raise InputError(
                f"the Qlib provider folder {provider_folder()} has no vwap field (vwap='require')"
            )
        self.use_vwap = vwap == "require" or (vwap == "auto" and have is not False)
        if not self.use_vwap:
            log.warning("Alpha158Checked: no $vwap in the data; VWAP0 is left out (157 features)")
        super().__init__(*args, **kwargs)

    def get_feature_config(self):
        price = ["OPEN", "HIGH", "LOW"] + (["VWAP"] if self.use_vwap else [])
        return Alpha158DL.get_feature_config(
            {"kbar": {}, "price": {"windows": [0], "feature": price}, "rolling": {}}
        )
