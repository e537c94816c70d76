"""Model-zoo names: a short name resolves to the Hub ids of model and tokenizer and the
context the model was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class ZooEntry:
    model: str
    tokenizer: str
    max_context: int


ZOO = {
    "kronos-mini": ZooEntry("NeoQuasar/Kronos-mini", "NeoQuasar/Kronos-Tokenizer-2k", 2048),
    "kronos-small": ZooEntry("NeoQuasar/Kronos-small", "NeoQuasar/Kronos-Tokenizer-base", 512),
    "kronos-base": ZooEntry("NeoQuasar/Kronos-base", "NeoQuasar/Kronos-Tokenizer-base", 512),
}


def resolve(name: str) -> ZooEntry:
    """A zoo name (case-insensitive; 'Kronos-small' and 'NeoQuasar/Kronos-small' work too)."""
    key = name.lower().split("/")[-1]
    if key not in ZOO:
        raise KeyError(f"unknown model name {name!r}; known: {sorted(ZOO)}")
    return ZOO[key]


def load(name: str, device: str | None = None):
    """(model, tokenizer, max_context) for a zoo name, downloaded from the Hub."""
    from .model import Kronos
    from .tokenizer import KronosTokenizer

    entry = resolve(name)
    model = Kronos.from_pretrained(entry.model)
    tokenizer = KronosTokenizer.from_pretrained(entry.tokenizer)
    if device:
        model, tokenizer = model.to(device), tokenizer.to(device)
    return model, tokenizer, entry.max_context
