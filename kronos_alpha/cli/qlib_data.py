"""``kronos-alpha qlib-data build|check``: make and verify Qlib provider folders."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "qlib-data", help="build or check a Qlib provider folder from CSV/parquet bars"
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser("build", help="CSV folder, long CSV or parquet -> Qlib provider folder")
    b.add_argument(
        "source", help="a folder of per-instrument CSV/parquet files, or one long CSV/parquet file"
    )
    b.add_argument("out", help="the provider folder to write")
    b.add_argument("--market", help="also write instruments/<MARKET>.txt listing every instrument")
    b.add_argument(
        "--freq", default="day", help="Qlib frequency name for the calendar and bins (default day)"
    )
    b.add_argument(
        "--instrument-column", help="the instrument column of a long file (default: guessed)"
    )
    b.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    b.set_defaults(func=run_build)

    c = actions.add_parser(
        "check", help="verify an existing provider folder and report what is wrong"
    )
    c.add_argument("folder")
    c.add_argument("--freq", default="day")
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


def run_build(args) -> int:
    from kronos_alpha.adapters.qlib.data import build

    report = build(
        args.source, args.out, args.market, args.freq, args.instrument_column, args.overwrite
    )
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0


def run_check(args) -> int:
    from kronos_alpha.adapters.qlib.data import check

    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    report = check(args.folder, args.freq, fields, args.market, args.benchmark, deep=not args.quick)
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0 if report.ok else 1
