"""``kronos-alpha qlib-data build|check|weights``: make, verify and extend Qlib provider folders.

``build`` validates the whole input before it writes anything; a refused build prints its
report (every problem, on stdout as JSON and one a line on stderr) and exits 1, leaving no
folder. ``--dry-run`` prints what would be written and writes nothing (exit 1 when the
input has problems). ``check`` exits 1 when the folder has errors. ``weights`` writes the
benchmark-weight field ``$<market>_weight`` that Qlib's EnhancedIndexingStrategy reads, from
point-in-time membership (equal, or ``--cap-field``), and a benchmark series when
``--benchmark`` names an instrument the folder lacks; refused (exit 1) it writes nothing.
"""

from __future__ import annotations

import json
import sys

from . import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "qlib-data",
        help="build or check a Qlib provider folder from CSV/parquet bars",
        formatter_class=DefaultsHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="CSV folder, long CSV or parquet -> Qlib provider folder",
        formatter_class=DefaultsHelpFormatter,
    )
    b.add_argument(
        "source", help="a folder of per-instrument CSV/parquet files, or one long CSV/parquet file"
    )
    b.add_argument("out", help="the provider folder to write")
    b.add_argument("--market", help="also write instruments/<MARKET>.txt listing every instrument")
    b.add_argument(
        "--freq",
        default="day",
        help="Qlib frequency name for the calendar and bins: day, week, month, 1min, 5min, ...",
    )
    b.add_argument(
        "--instrument-column", help="the instrument column of a long file (default: guessed)"
    )
    b.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder (its files are replaced, others stay)",
    )
    b.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and report what would be written (instruments, rows, calendar "
        "span, problems); write nothing",
    )
    b.set_defaults(func=run_build)

    c = actions.add_parser(
        "check",
        help="verify an existing provider folder and report what is wrong",
        formatter_class=DefaultsHelpFormatter,
    )
    c.add_argument("folder", help="the provider folder to verify")
    c.add_argument("--freq", default="day", help="the calendar and bins to check")
    c.add_argument("--market", help="also require instruments/<MARKET>.txt")
    c.add_argument("--benchmark", help="also require this instrument (e.g. SH000300)")
    c.add_argument(
        "--fields",
        default="open,high,low,close,volume",
        help="comma-separated fields every instrument needs",
    )
    c.add_argument(
        "--quick", action="store_true", help="skip reading every bin (OHLC and change checks)"
    )
    c.set_defaults(func=run_check)

    w = actions.add_parser(
        "weights",
        help="write a market's benchmark weights ($<market>_weight, for EnhancedIndexing) "
        "from its point-in-time membership",
        formatter_class=DefaultsHelpFormatter,
    )
    w.add_argument("folder", help="a writable provider folder (copy a read-only one first)")
    w.add_argument("--market", required=True, help="instruments/<MARKET>.txt, e.g. csi300")
    how = w.add_mutually_exclusive_group()
    how.add_argument(
        "--equal", action="store_true", help="equal weights over the day's members (default)"
    )
    how.add_argument(
        "--cap-field",
        help="weight by this field (features/<code>/<FIELD>.<freq>.bin), e.g. a market cap",
    )
    w.add_argument(
        "--benchmark",
        help="also write this benchmark series (the weighted members' index) when the "
        "folder has no close for it",
    )
    w.add_argument("--freq", default="day", help="the calendar and bins to weight")
    w.add_argument("--overwrite", action="store_true", help="replace an existing weight field")
    w.add_argument("--dry-run", action="store_true", help="report what would be written")
    w.set_defaults(func=run_weights)


def run_build(args) -> int:
    from kronos_alpha.adapters.qlib.data import BuildError, build

    try:
        report = build(
            args.source,
            args.out,
            args.market,
            args.freq,
            args.instrument_column,
            args.overwrite,
            dry_run=args.dry_run,
        )
    except BuildError as exc:
        report = exc.report
    what = "dry run found" if args.dry_run else "build refused, nothing written:"
    return print_report(report, f"kronos-alpha qlib-data: error: {what}")


def print_report(report, refusal: str) -> int:
    """The report as JSON on stdout; every problem on stderr after ``refusal``, exit 1."""
    print(json.dumps(report.as_dict(), indent=2, default=str))
    if report.errors:
        lines = [f"{refusal} {len(report.errors)} problem(s)"]
        print("\n".join(lines + [f"  {e}" for e in report.errors]), file=sys.stderr)
        return 1
    return 0


def run_check(args) -> int:
    from kronos_alpha.adapters.qlib.data import check

    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    report = check(args.folder, args.freq, fields, args.market, args.benchmark, deep=not args.quick)
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0 if report.ok else 1


def run_weights(args) -> int:
    from kronos_alpha.adapters.qlib.weights import WeightsError, write_weights

    try:
        report = write_weights(
            args.folder,
            args.market,
            args.cap_field,
            args.benchmark,
            args.freq,
            args.overwrite,
            dry_run=args.dry_run,
        )
    except WeightsError as exc:
        report = exc.report
    return print_report(report, "kronos-alpha qlib-data weights: error: nothing written:")
