"""A writable copy of part of a Qlib provider folder (the shared data is read-only).

``copy_provider(src, dest, codes)`` copies the calendars, the ``features/<code>`` folders of
``codes`` (default: every instrument of ``instruments/all.txt`` that has a features folder)
and every ``instruments/<market>.txt`` restricted to those codes, byte for byte, through one
``ConfinedWriter`` into ``dest`` (which must be new or empty). ``qlib-data weights`` can then
write a field into the copy. Restricting ``all.txt`` to instruments with data also keeps
Qlib's ``D.instruments("all")`` (which EnhancedIndexingStrategy reads every day) small.
"""

from __future__ import annotations

from pathlib import Path

from kronos_alpha.inference.panel import InputError

from .build import ConfinedWriter
from .sources import code_problem


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def copy_provider(src: str | Path, dest: str | Path, codes=None) -> list[str]:
    """Copy part of ``src`` into ``dest``; returns the codes copied (upper case)."""
    src, dest = Path(src), Path(dest)
    if not (src / "instruments" / "all.txt").is_file():
        raise InputError(f"{src} is not a Qlib provider folder (no instruments/all.txt)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest} exists and is not an empty folder")
    listed = {ln.split("\t")[0].strip().upper() for ln in _lines(src / "instruments" / "all.txt")}
    with_data = {c for c in listed if (src / "features" / c.lower()).is_dir()}
    wanted = with_data if codes is None else {str(c).upper() for c in codes}
    problems = [p for c in sorted(wanted) if (p := code_problem(c))]
    problems += [f"{c} has no data in {src}" for c in sorted(wanted - with_data)]
    if problems:
        raise InputError(f"cannot copy from {src}: " + "; ".join(problems))
    dest.mkdir(parents=True, exist_ok=True)
    writer = ConfinedWriter(dest)
    for cal in sorted((src / "calendars").glob("*.txt")):
        writer.write(f"calendars/{cal.name}", cal.read_bytes())
    for code in sorted(wanted):
        for f in sorted((src / "features" / code.lower()).glob("*.bin")):
            writer.write(f"features/{code.lower()}/{f.name}", f.read_bytes())
    for market in sorted((src / "instruments").glob("*.txt")):
        keep = [ln for ln in _lines(market) if ln.split("\t")[0].strip().upper() in wanted]
        writer.write(f"instruments/{market.name}", "\n".join(keep) + "\n")
    return sorted(wanted)
