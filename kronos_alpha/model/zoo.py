"""Model-zoo names: a short name resolves to the Hub ids of model and tokenizer and the
context the model was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hub import hub_reachable

ASSETS = Path(__file__).parent.parent / "assets"


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
    from .kronos import Kronos
    from .tokenizer import KronosTokenizer

    entry = resolve(name)
    model = Kronos.from_pretrained(entry.model)
    tokenizer = KronosTokenizer.from_pretrained(entry.tokenizer)
    if device:
        model, tokenizer = model.to(device), tokenizer.to(device)
    return model, tokenizer, entry.max_context


# -- the default model and its offline fallback ----------------------------------------------
DEFAULT_NAME = "kronos-small"
DEFAULT_DIR = ASSETS / "default"
DEFAULT_MAX_CONTEXT = 512


def load_folder(folder, device: str | None = None):
    """(model, tokenizer, max_context) from a folder holding model/ and tokenizer/ subfolders
    in the Hub format; max_context from an optional meta.json ({"max_context": ...}) or the
    training.json of the run that made it, else 512."""
    import json

    from .hub import CheckpointError
    from .kronos import Kronos
    from .tokenizer import KronosTokenizer

    folder = Path(folder)
    if not (folder / "model").is_dir() or not (folder / "tokenizer").is_dir():
        raise CheckpointError(f"{str(folder)!r} has no model/ and tokenizer/ subfolders")
    model = Kronos.from_pretrained(str(folder / "model"))
    tokenizer = KronosTokenizer.from_pretrained(str(folder / "tokenizer"))
    max_context = DEFAULT_MAX_CONTEXT
    meta, training = folder / "meta.json", folder / "training.json"
    if meta.is_file():
        max_context = int(json.loads(meta.read_text()).get("max_context", max_context))
    elif training.is_file():  # written by the fine-tuning run that produced the checkpoint
        max_context = int(
            json.loads(training.read_text()).get("config", {}).get("max_context", max_context)
        )
    if device:
        model, tokenizer = model.to(device), tokenizer.to(device)
    return model, tokenizer, max_context


def load_default(device: str | None = None):
    """(model, tokenizer, max_context, source) for "no model named": the Hub's kronos-small,
    else a copy in the local Hub cache, else the checkpoint bundled in the package - with a
    warning saying which, since its forecasts are not those of kronos-small."""
    import warnings

    from .hub import CheckpointError

    entry = resolve(DEFAULT_NAME)
    if hub_reachable():
        try:
            return (*load(DEFAULT_NAME, device), entry.model)
        except Exception as exc:  # noqa: BLE001 - any Hub failure falls through to the bundled model
            reason = f"loading {entry.model} from the Hub failed ({type(exc).__name__}: {exc})"
    else:
        reason = "the Hugging Face Hub cannot be reached"
        from .kronos import Kronos
        from .tokenizer import KronosTokenizer

        try:  # a copy downloaded earlier
            model = Kronos.from_pretrained(entry.model, local_files_only=True)
            tokenizer = KronosTokenizer.from_pretrained(entry.tokenizer, local_files_only=True)
            if device:
                model, tokenizer = model.to(device), tokenizer.to(device)
            warnings.warn(f"{reason}; using the locally cached {entry.model}", stacklevel=2)
            return model, tokenizer, entry.max_context, entry.model
        except Exception:  # noqa: BLE001 - not cached
            pass
    if not (DEFAULT_DIR / "model" / "config.json").is_file():
        raise CheckpointError(
            f"{reason}, and the bundled default checkpoint {DEFAULT_DIR} is missing"
        )
    warnings.warn(
        f"{reason}; using the small offline checkpoint bundled with kronos-alpha ({DEFAULT_DIR}). "
        f"Its forecasts are a demonstration, not those of {entry.model}: name a model to be sure.",
        stacklevel=2,
    )
    return (*load_folder(DEFAULT_DIR, device), str(DEFAULT_DIR))


def default_info() -> dict:
    """What is bundled as the offline default (no weights are loaded)."""
    import json

    info = {
        "folder": str(DEFAULT_DIR),
        "present": (DEFAULT_DIR / "model" / "config.json").is_file(),
    }
    for part in ("model", "tokenizer"):
        folder = DEFAULT_DIR / part
        if (folder / "config.json").is_file():
            weights = folder / "model.safetensors"
            info[part] = {
                "config": json.loads((folder / "config.json").read_text()),
                "weights_bytes": weights.stat().st_size if weights.is_file() else None,
            }
    if (DEFAULT_DIR / "meta.json").is_file():
        info["meta"] = json.loads((DEFAULT_DIR / "meta.json").read_text())
    return info


# -- what a user names, resolved ----------------------------------------------------------------
def check_compatible(model, tokenizer) -> None:
    if (model.s1_bits, model.s2_bits) != (tokenizer.s1_bits, tokenizer.s2_bits):
        raise ValueError(
            f"tokenizer bit widths (s1={tokenizer.s1_bits}, s2={tokenizer.s2_bits}) disagree with "
            f"the model's (s1={model.s1_bits}, s2={model.s2_bits})"
        )


def load_tokenizer(source, model_name=None):
    """A KronosTokenizer instance, folder or Hub id -> the tokenizer."""
    from .hub import CheckpointError
    from .tokenizer import KronosTokenizer

    if source is None:
        raise ValueError(
            f"model {model_name!r} does not include a tokenizer: name one "
            "(tokenizer= in Python, --tokenizer on the command line)"
        )
    if isinstance(source, KronosTokenizer):
        return source
    if isinstance(source, (str, Path)):
        try:
            return KronosTokenizer.from_pretrained(str(source))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"tokenizer {str(source)!r} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
    raise ValueError(
        f"tokenizer must be a KronosTokenizer, folder or Hub id, got {type(source).__name__}"
    )


def resolve_checkpoint(model=None, tokenizer=None):
    """(model, tokenizer, max_context, source description) for what a user names.

    model: None (the default, see ``load_default``), a zoo name, a Hub id, a folder (with
    model/ and tokenizer/ subfolders it holds both), or a Kronos instance (then ``tokenizer``
    is required). A named model that cannot be loaded is a CheckpointError, never a silent
    fallback.
    """
    from .hub import CheckpointError
    from .kronos import Kronos

    if model is None:
        if tokenizer is not None:
            raise ValueError("tokenizer= was given without model=; name the model it belongs to")
        out = load_default()
    elif isinstance(model, Kronos):
        source = f"{type(model).__name__} instance"
        out = (model, load_tokenizer(tokenizer, model), DEFAULT_MAX_CONTEXT, source)
    elif not isinstance(model, (str, Path)):
        raise ValueError(
            f"model must be a zoo name, Hub id, folder or Kronos instance, got {type(model).__name__}"
        )
    else:
        name = str(model)
        try:
            if Path(name).is_dir():
                both = (Path(name) / "model").is_dir() and (Path(name) / "tokenizer").is_dir()
                if both and tokenizer is None:
                    out = (*load_folder(name), name)
                else:
                    out = (Kronos.from_pretrained(name), load_tokenizer(tokenizer, name))
                    out = (*out, DEFAULT_MAX_CONTEXT, name)
            else:
                try:
                    entry = resolve(name)
                except KeyError:
                    entry = None
                if entry is not None and tokenizer is None:
                    out = (*load(name), entry.model)
                else:
                    loaded = Kronos.from_pretrained(entry.model if entry else name)
                    mc = entry.max_context if entry else DEFAULT_MAX_CONTEXT
                    out = (loaded, load_tokenizer(tokenizer, name), mc, name)
        except CheckpointError:
            raise
        except Exception as exc:  # network, missing repo, bad files: never a silent fallback
            raise CheckpointError(
                f"model {name!r} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
    check_compatible(out[0], out[1])
    return out
