"""Forecast charts: candles for the context, the mean path and a fan of sampled quantiles."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _candles(ax, x, df, width=0.6):
    up = (df["close"] >= df["open"]).to_numpy()
    colors = np.where(up, "#26a69a", "#ef5350")
    ax.vlines(x, df["low"], df["high"], colors=colors, linewidth=0.8, zorder=2)
    lo = np.minimum(df["open"], df["close"]).to_numpy()
    height = np.maximum(np.abs(df["close"] - df["open"]).to_numpy(), 1e-9 * df["close"].abs().max())
    ax.bar(x, height, width, bottom=lo, color=colors, edgecolor=colors, linewidth=0.5, zorder=3)


def plot_forecast(
    history: pd.DataFrame,
    future: pd.DatetimeIndex,
    paths: np.ndarray,
    title: str = "",
    context: int = 60,
    fan=((0.1, 0.9), (0.25, 0.75)),
    ax=None,
    actual: pd.DataFrame | None = None,
    ylabel: str = "price (as given)",
):
    """Plot the last ``context`` bars of ``history`` (open high low close), then the forecast
    from ``paths`` (samples, horizon, 6 - close is column 3): mean path, median, quantile fan.
    Bars sit at consecutive x positions (no weekend gaps); ticks show dates. ``actual``: the
    bars that followed (for a past decision time), drawn as the realised close. ``ylabel``
    says what the prices are (adjusted, say). Returns the figure."""
    import matplotlib

    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    else:
        fig = ax.figure
    hist = history.iloc[-context:]
    n, p = len(hist), len(future)
    xh = np.arange(n)
    xf = np.arange(n - 1, n + p)  # start the forecast at the last close
    _candles(ax, xh, hist)
    last = float(hist["close"].iloc[-1])
    close = np.concatenate([np.full((paths.shape[0], 1), last), paths[:, :, 3]], axis=1)
    blues = matplotlib.colormaps["Blues"]
    for k, (lo, hi) in enumerate(fan):
        qlo, qhi = np.quantile(close, [lo, hi], axis=0)
        ax.fill_between(
            xf,
            qlo,
            qhi,
            color=blues(0.35 + 0.25 * k),
            alpha=0.55,
            linewidth=0,
            zorder=1,
            label=f"{lo:.0%}-{hi:.0%} of {paths.shape[0]} samples",
        )
    for s in range(min(paths.shape[0], 50)):
        ax.plot(xf, close[s], color="#1f4e79", alpha=0.12, linewidth=0.6, zorder=1)
    ax.plot(
        xf,
        np.median(close, axis=0),
        color="#1f4e79",
        linestyle="--",
        linewidth=1.2,
        label="median path",
        zorder=4,
    )
    ax.plot(xf, close.mean(axis=0), color="#ff8f00", linewidth=2.2, label="mean path", zorder=5)
    if actual is not None and len(actual):
        real = np.concatenate([[last], actual["close"].to_numpy()[:p]])
        ax.plot(
            xf[: len(real)],
            real,
            color="black",
            marker="o",
            markersize=3,
            linewidth=1.2,
            label="realised close",
            zorder=6,
        )
    ax.axvline(n - 1, color="grey", linestyle=":", linewidth=1)
    ax.annotate(
        "decision time",
        (n - 1, ax.get_ylim()[1]),
        xytext=(-4, -12),
        textcoords="offset points",
        ha="right",
        fontsize=8,
        color="grey",
    )
    stamps = list(hist.index) + list(future)
    ticks = np.linspace(0, n + p - 1, num=min(8, n + p)).round().astype(int)
    fmt = "%Y-%m-%d" if all(t == t.normalize() for t in stamps) else "%m-%d %H:%M"
    ax.set_xticks(ticks, [stamps[i].strftime(fmt) for i in ticks], rotation=0, fontsize=8)
    ax.set_xlim(-1, n + p)
    ax.set_ylabel(ylabel)
    ret = close[:, -1] / last - 1
    ax.set_title(
        f"{title}  -  {p}-bar forecast: mean {ret.mean():+.2%}, 10-90% [{np.quantile(ret, 0.1):+.2%}, "
        f"{np.quantile(ret, 0.9):+.2%}], P(up) {np.mean(ret > 0):.0%}".strip(" -"),
        fontsize=10,
    )
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    return fig


# -- books and trades: shared by the backtrader, vectorbt and strategy examples ------------------
def date_axis(ax) -> None:
    """Dates on the x-axis that stay readable: a few ticks, labelled concisely (2021, Feb, ...)."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def plot_lines(
    ax,
    curves: dict,
    title: str = "",
    ylabel: str = "",
    styles: dict | None = None,
    legend: str = "upper left",
):
    """Date-indexed series on one axis (a book's value, cumulative returns), one line each,
    ``styles[name]`` the line's keyword arguments; a readable date axis and a legend."""
    styles = styles or {}
    for name, s in curves.items():
        kw = {"linewidth": 1.4} | styles.get(name, {})
        ax.plot(pd.DatetimeIndex(s.index), np.asarray(s, dtype=float), label=name, **kw)
    date_axis(ax)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(loc=legend, fontsize=8, framealpha=0.85)
    return ax


def plot_trades(
    ax, close: pd.Series, buys=(), sells=(), held: pd.Series | None = None, name="", legend=None
):
    """One instrument's close with its buys (^) and sells (v) at their fill prices
    (``(time, price)`` pairs) and, from ``held`` (a boolean series), the days in the book
    shaded. The name and the fill counts sit inside the axis, so stacked panels' labels do
    not overlap; ``legend``: a legend location, or None for none (give stacked panels one)."""
    x = pd.DatetimeIndex(close.index)
    y = close.to_numpy(dtype=float)
    ax.plot(x, y, color="black", linewidth=1.0, label="close")
    if held is not None and bool(np.any(held)):
        ax.fill_between(x, np.nanmin(y), np.nanmax(y), where=np.asarray(held, dtype=bool),
                        color="#1f77b4", alpha=0.12, linewidth=0, step="post", label="held")  # fmt: skip
    buys, sells = list(buys), list(sells)
    for pts, marker, color, label in (
        (buys, "^", "#2e7d32", "buy"),
        (sells, "v", "#c62828", "sell"),
    ):
        if pts:
            t, p = zip(*pts, strict=True)
            ax.scatter(
                pd.DatetimeIndex(t), p, marker=marker, color=color, s=22, zorder=3, label=label
            )
    ax.text(0.005, 0.95, f"{name}  {len(buys)} buys, {len(sells)} sells".strip(),
            transform=ax.transAxes, va="top", fontsize=9,
            bbox=dict(facecolor="white", alpha=0.8, linewidth=0, pad=1.5))  # fmt: skip
    date_axis(ax)
    ax.grid(alpha=0.25)
    if legend:
        ax.legend(loc=legend, fontsize=7, framealpha=0.85, ncol=4)
    return ax
