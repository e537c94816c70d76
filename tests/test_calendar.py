"""Future bar times from a calendar known at t (issue #14): exchange sessions and intraday
grids, the calendar setting, and forecast(panel, [t]) == forecast(panel cut at t, [t]) bit for
bit on pre-holiday dates of the shared CSI300 data, in the Forecaster and in every door."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DATA, FIXTURE, TINY_MODEL, TINY_TOKENIZER

from kronos_alpha import Forecaster
from kronos_alpha.inference import exchange
from kronos_alpha.inference.calendar import CalendarError, bar_steps, future_times
from kronos_alpha.inference.settings import ForecastSettings, SettingsError

CN = DATA / "cn_daily_2010_2022"
INTRADAY = DATA / "intraday" / "sh600977_5min_2024.csv"
CODES = ["SH600000", "SH600036", "SZ000001", "SZ000002"]
# the last session before the Spring Festival (2019, 2020) and National Day (2019, 2021)
PRE_HOLIDAY = ["2019-02-01", "2020-01-23", "2019-09-30", "2021-09-30"]


def need(path):
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")


def day_calendar() -> pd.DatetimeIndex:
    need(CN / "calendars" / "day.txt")
    return pd.DatetimeIndex(pd.read_csv(CN / "calendars" / "day.txt", header=None)[0])


def cn_bars(code: str, start: str, end: str) -> pd.DataFrame:
    """One instrument of the shared Qlib folder, read from its .bin files (no Qlib needed)."""
    cal = day_calendar()
    cols = {}
    for f in ("open", "high", "low", "close", "volume"):
        raw = np.fromfile(CN / "features" / code.lower() / f"{f}.day.bin", dtype="<f4")
        first = int(raw[0])
        cols[f] = pd.Series(raw[1:].astype(np.float64), index=cal[first : first + len(raw) - 1])
    return pd.DataFrame(cols).rename_axis("datetime").loc[start:end]


def cut(panel: dict, t) -> dict:
    return {k: v[v.index <= pd.Timestamp(t)] for k, v in panel.items()}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    from kronos_alpha import Kronos, KronosTokenizer

    return Kronos(**TINY_MODEL).eval(), KronosTokenizer(**TINY_TOKENIZER).eval()


def fc_for(tiny, **kw):
    params = dict(lookback=32, horizon=5, sample_count=2, progress=False, device="cpu")
    return Forecaster(*tiny, **{**params, **kw})


# -- the setting ---------------------------------------------------------------------------
def test_calendar_setting_is_validated(tmp_path):
    assert (
        ForecastSettings().calendar is None and ForecastSettings(calendar="auto").calendar is None
    )
    assert ForecastSettings(calendar="xshe").calendar == "XSHE"
    for name in ("XSHG", "XNYS", "XHKG", "24/7", "business", "panel"):
        assert ForecastSettings(calendar=name).calendar == name
    times = ForecastSettings(calendar=["2024-01-03", "2024-01-02", "2024-01-03"]).calendar
    assert times == (pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03"))
    hash(ForecastSettings(calendar=times))  # stays hashable (adapters key on settings)
    day = tmp_path / "day.txt"
    day.write_text("2024-01-02\n2024-01-03\n")
    assert ForecastSettings(calendar=day).calendar == str(day)
    with pytest.raises(SettingsError, match=r"'XSHX' is not an exchange.*get_calendar_names"):
        ForecastSettings(calendar="XSHX")
    with pytest.raises(SettingsError, match="calendar file .* does not exist"):
        ForecastSettings(calendar=str(tmp_path / "nope" / "day.txt"))
    with pytest.raises(SettingsError, match="non-empty"):
        ForecastSettings(calendar=[])
    with pytest.raises(SettingsError, match=r"calendar timestamps are not .*'soon' at position 1"):
        ForecastSettings(calendar=["2024-01-02", "soon"])
    from kronos_alpha.inference.exchange import read_calendar_file

    day.write_text("2024-01-02\n\n2024-13-01\n")
    with pytest.raises(SettingsError, match=r"day.txt': its lines .*'2024-13-01' at position 1"):
        read_calendar_file(str(day), 0, 0)
    with pytest.raises(SettingsError, match="calendar must be"):
        ForecastSettings(calendar=3)


def test_exchange_inferred_from_codes_or_region():
    for code in ("SH600000", "sz000001", "600000.SH", "000001.SZ", "600000.SS", "SHSE.600000"):
        assert exchange.code_exchange(code) == "XSHG", code
    assert exchange.code_exchange("0700.HK") == "XHKG"
    assert exchange.code_exchange("AAPL") is None and exchange.code_exchange("SH60000") is None
    assert exchange.infer_exchange(["SH600000", "SZ000001", "MYINDEX"]) == "XSHG"
    assert exchange.infer_exchange(["AAPL"]) is None
    assert exchange.infer_exchange(["AAPL"], region="us") == "XNYS"
    with pytest.raises(SettingsError, match=r"different calendars \['XHKG', 'XSHG'\]"):
        exchange.infer_exchange(["SH600000", "0700.HK"])


# -- the future bar times ------------------------------------------------------------------
def test_xshg_sessions_are_the_data_calendar_for_every_day():
    """At every day of the shared 2010-2022 calendar, XSHG gives the next sessions of the data."""
    day = day_calendar()
    h = 5
    futures, used, note = future_times(None, day, day[:-h], h, CODES)
    assert used == "XSHG (auto)" and note == {}
    for i, t in enumerate(day[:-h]):
        assert futures[t].equals(day[i + 1 : i + 1 + h]), t


def test_intraday_grid_is_bar_end_stamped_like_the_shared_file():
    """5-minute XSHG bars end at 09:35 .. 11:30 and 13:05 .. 15:00, as the file stamps them."""
    need(INTRADAY)
    idx = pd.DatetimeIndex(pd.read_csv(INTRADAY, parse_dates=["timestamps"]).timestamps)
    h = 60  # more than a session: across the lunch break and the night
    dec = idx[50:-h]
    for times in (
        idx,
        idx.tz_localize("Asia/Shanghai"),
        idx.tz_localize("Asia/Shanghai").tz_convert("UTC"),
    ):
        d = times[50:-h]
        futures, used, _ = future_times(None, times, d, h, ["sh600977_5min_2024"])
        assert used == "XSHG (auto)"
        for i, t in enumerate(d):
            assert futures[t].equals(times[50 + i + 1 : 50 + i + 1 + h]), t
    tods = pd.Index(future_times("XSHG", idx, dec[-1:], 48, ["x"])[0][dec[-1]].strftime("%H:%M"))
    assert tods.min() == "09:35" and tods.max() == "15:00" and "13:00" not in tods


def test_bars_off_the_calendar_are_warned_about():
    """Start-stamped or wrongly zoned intraday bars, or days the exchange was closed."""
    need(INTRADAY)
    idx = pd.DatetimeIndex(pd.read_csv(INTRADAY, parse_dates=["timestamps"]).timestamps)
    assert future_times(None, idx, idx[-30:-20], 5, ["SH600977"])[2] == {}
    sh = idx - pd.Timedelta(minutes=5)  # 09:30 .. 14:55: bar-start stamps
    (start,) = future_times(None, sh, sh[-30:-20], 5, ["SH600977"])[2].values()
    assert "104 of 2480 bar times" in start and "stamped at their start" in start
    utc = idx.tz_localize("Asia/Shanghai").tz_convert("UTC").tz_localize(None)
    assert "2480 of 2480" in str(future_times("XSHG", utc, utc[-30:-20], 5, ["x"])[2])
    b = pd.bdate_range("2019-01-01", "2019-12-31")
    (note,) = future_times(None, b, b[-20:-10], 5, ["SH600000"])[2].values()
    assert "16 of 250 bar times" in note and "2019-02-04" in note  # after the first session


@pytest.mark.parametrize("setting", [None, "XSHG", "24/7", "business", "files"])
def test_future_times_depend_only_on_bars_up_to_t(setting, tmp_path):
    """The rule for every calendar: the same stamps from the full bar times and from those cut
    at t (daily and intraday); the old "panel" rule fails this on a pre-holiday day."""
    day = day_calendar()
    if setting == "files":
        (tmp_path / "day.txt").write_text("\n".join(day.strftime("%Y-%m-%d")))
        setting = str(tmp_path / "day.txt")
    days = day[(day >= "2018-12-01") & (day <= "2019-03-31")]
    mins = list(range(575, 691, 5)) + list(range(785, 901, 5))
    intraday = pd.DatetimeIndex([d + pd.Timedelta(minutes=m) for d in days[:30] for m in mins])
    for times in (days, intraday):
        full, _, _ = future_times(setting, times, times[5:-30], 7, CODES)
        for t in times[5:-30:7]:
            alone, _, _ = future_times(setting, times[times <= t], [t], 7, CODES)
            assert alone[t].equals(full[t]), (setting, t)
    t = pd.Timestamp("2019-02-01")
    old_full, _, _ = future_times("panel", days, [t], 3, CODES)
    old_cut, _, _ = future_times("panel", days[days <= t], [t], 3, CODES)
    assert not old_full[t].equals(old_cut[t])  # the look-ahead this module removes


def test_bar_frequency_is_read_at_or_before_t():
    daily = pd.bdate_range("2024-01-01", periods=20)
    five = pd.date_range("2024-02-01 09:35", periods=10, freq="5min")
    times = daily.append(five)
    intraday, step = bar_steps(times, pd.DatetimeIndex([daily[-1], five[1], five[-1]]))
    assert list(intraday) == [False, True, True]
    assert list(step) == [pd.Timedelta(days=1).value] + [pd.Timedelta(minutes=5).value] * 2
    weekly = pd.date_range("2024-01-05", periods=10, freq="W-FRI")
    f, _, _ = future_times("XSHG", weekly, weekly[-1:], 2, ["x"])
    assert list(f[weekly[-1]]) == list(weekly[-1] + pd.to_timedelta([7, 14], "D"))  # coarser


def test_crypto_and_user_calendars(tmp_path):
    hours = pd.date_range("2024-03-01 00:00", periods=100, freq="1h", tz="UTC")
    f, used, _ = future_times("24/7", hours, hours[-1:], 30, ["BTCUSDT"])
    assert used == "24/7" and f[hours[-1]].equals(hours[-1] + pd.to_timedelta(range(1, 31), "h"))
    days = pd.date_range("2024-03-01", periods=30, freq="D")  # weekends are sessions too
    f, _, _ = future_times("24/7", days, days[-1:], 3, ["BTCUSDT"])
    assert f[days[-1]].equals(pd.date_range(days[-1] + pd.Timedelta(days=1), periods=3))
    # a list of timestamps / a Qlib calendar file with the coming sessions; t's time of day kept
    closes = pd.bdate_range("2024-01-02", periods=10) + pd.Timedelta(hours=15)
    coming = ("2024-01-16", "2024-01-18", "2024-01-19", "2024-01-22")
    f, used, _ = future_times(
        ForecastSettings(calendar=coming).calendar, closes, closes[-1:], 3, ["x"]
    )
    assert used == "4 timestamps"
    assert list(f[closes[-1]]) == list(pd.to_datetime(coming[:3]) + pd.Timedelta(hours=15))
    (tmp_path / "day.txt").write_text("\n".join(coming) + "\n")
    g, used, _ = future_times(str(tmp_path / "day.txt"), closes, closes[-1:], 3, ["x"])
    assert used == str(tmp_path / "day.txt") and g[closes[-1]].equals(f[closes[-1]])
    with pytest.raises(CalendarError, match=r"calendar file: it knows bar times up to 2024-01-22"):
        future_times(str(tmp_path / "day.txt"), closes, closes[-1:], 5, ["x"])


def test_calendar_that_ends_too_early_is_a_clear_error():
    """exchange-calendars records XSHG holidays to a known year: beyond it, no silent guess."""
    last = exchange.bounds("XSHG")[1]
    days = pd.DatetimeIndex([last - pd.Timedelta(days=3), last])
    with pytest.raises(
        CalendarError, match=r"calendar XSHG: .* needs 5 bar\(s\).*upgrade exchange-calendars"
    ):
        future_times(None, days, days[-1:], 5, CODES)


# -- the Forecaster -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cn_panel():
    need(CN / "calendars" / "day.txt")
    return {c: cn_bars(c, "2018-06-01", "2021-12-31") for c in CODES}


def test_forecast_at_t_equals_the_forecast_from_the_panel_cut_at_t(tiny, cn_panel):
    """Pre-holiday sessions (Spring Festival, National Day) of real CSI300 data: bit-identical
    with the default calendar; the old panel rule differs there (the test can fail)."""
    torch.set_num_threads(1)
    fc, old = fc_for(tiny), fc_for(tiny, calendar="panel")
    for t in map(pd.Timestamp, PRE_HOLIDAY):
        full = fc.forecast(cn_panel, [t])
        pd.testing.assert_frame_equal(full, fc.forecast(cut(cn_panel, t), [t]), check_exact=True)
        assert fc.report["calendar"] == "XSHG (auto)" and len(full) == len(CODES)
        # the full panel's forecast is what it was: XSHG is the data's calendar
        pd.testing.assert_frame_equal(full, old.forecast(cn_panel, [t]), check_exact=True)
        moved = old.forecast(cut(cn_panel, t), [t])
        assert (moved.pred_return - full.pred_return).abs().max() > 0


def test_business_fallback_warns_once_and_is_reported(tiny):
    from conftest import make_panel

    panel = make_panel(2, 60, names=("AAA", "BBB"), start="2024-01-02")
    fc = fc_for(tiny)
    t = panel["AAA"].index[-1]
    with pytest.warns(UserWarning, match="no exchange could be inferred"):
        fc.forecast(panel, [t])
    assert fc.report["calendar"] == "business (auto: no exchange inferred)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fc.forecast(panel, [t])  # once per forecaster
    with pytest.warns(UserWarning, match="calendar='business'"):
        fc_for(tiny, calendar="business").forecast(panel, [t])
    sh = {"SH600000": panel["AAA"]}  # weekdays: some were Spring Festival holidays in 2024
    with pytest.warns(UserWarning, match="not among its session dates"):
        fc.forecast(sh, [t])
    assert fc.report["calendar"] == "XSHG (auto)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fc.forecast(sh, [panel["AAA"].index[-2]])  # other counts, the same kind: warned once


def test_exchange_calendar_is_built_once_per_call_and_kept(tiny, cn_panel, monkeypatch):
    calls = []
    original = exchange.sessions
    monkeypatch.setattr(exchange, "sessions", lambda *a: calls.append(a) or original(*a))
    dates = cn_panel[CODES[0]].loc["2019-01-02":"2019-03-29"].index
    fc_for(tiny, sample_count=1).forecast(cn_panel, dates)
    assert len(calls) == 1  # once per call, not per window
    before = exchange._built.cache_info().hits
    exchange.sessions(*calls[0])
    assert exchange._built.cache_info().hits == before + 1  # the calendar object is kept


# -- the doors ------------------------------------------------------------------------------
def tiny_fixture(**kw):
    if not (FIXTURE / "model").is_dir():
        pytest.skip(f"fixture checkpoint {FIXTURE} is absent")
    params = dict(lookback=16, horizon=3, sample_count=2, progress=False, device="cpu")
    return Forecaster(str(FIXTURE / "model"), str(FIXTURE / "tokenizer"), **{**params, **kw})


def test_qlib_model_at_t_equals_the_model_whose_segment_ends_at_t(tmp_path):
    """The handler holds bars after the pre-holiday session; the scores there are the same."""
    pytest.importorskip("qlib")
    need(CN / "calendars" / "day.txt")
    import qlib
    from kronos_alpha.adapters.qlib import KronosHandler, KronosModel
    from qlib.data.dataset import DatasetH

    qlib.init(provider_uri=str(CN), region="cn", kernels=1)
    handler = KronosHandler(instruments=CODES, start_time="2018-09-01", end_time="2019-02-28")
    segments = {"train": ("2018-09-01", "2018-12-28"), "test": ("2019-01-21", "2019-02-28")}
    ds = DatasetH(handler=handler, segments=segments)
    fixture = tiny_fixture()
    kw = dict(model=fixture.model, tokenizer=fixture.tokenizer, lookback=40, progress=False)
    for calendar, same in ((None, True), ("panel", False)):
        m = KronosModel(calendar=calendar, **kw)
        full = m.predict(ds).loc[:"2019-02-01"]
        ending = m.predict(ds, segment=("2019-01-21", "2019-02-01"))
        assert len(full) > 30 and full.index.equals(ending.index)
        assert full.equals(ending) is same, calendar
        assert m.last_report["calendar"] == ("XSHG" if calendar is None else "panel")  # region cn


def test_backtrader_and_vectorbt_at_t_equal_their_feeds_cut_at_t():
    bt = pytest.importorskip("backtrader")
    vbt = pytest.importorskip("vectorbt")
    need(CN / "calendars" / "day.txt")
    from kronos_alpha.adapters.backtrader import Kronos, bar_times
    from kronos_alpha.adapters.vectorbt import KronosSignal

    fc = tiny_fixture().load()
    feeds = {c: cn_bars(c, "2018-11-01", "2019-02-28") for c in CODES[:2]}
    t = pd.Timestamp("2019-02-01")

    class Record(bt.Strategy):
        params = (("calendar", None),)

        def __init__(self):
            self.k = {
                d._name: Kronos(d, forecaster=fc, calendar=self.p.calendar) for d in self.datas
            }

    def backtrader_at_t(frames, calendar, runonce):
        cerebro = bt.Cerebro(runonce=runonce, stdstats=False)
        for name, df in frames.items():
            cerebro.adddata(bt.feeds.PandasData(dataname=df), name=name)
        cerebro.addstrategy(Record, calendar=calendar)
        ind = cerebro.run()[0].k[CODES[0]]
        values = pd.Series(np.asarray(ind.lines.pred_return.array), index=bar_times(ind.data))
        return values.loc[t]

    def vectorbt_at_t(frames, calendar):
        wide = {f: pd.DataFrame({c: df[f] for c, df in frames.items()}) for f in frames[CODES[0]]}
        sig = KronosSignal.run(*(wide[f] for f in ("open", "high", "low", "close", "volume")),
                               forecaster=fc, calendar=calendar)  # fmt: skip
        return sig.pred_return.loc[t].to_numpy()

    for calendar in (None, "panel"):
        same = calendar is None
        a, b = (
            backtrader_at_t(feeds, calendar, True),
            backtrader_at_t(cut(feeds, t), calendar, True),
        )
        assert bool(a == b) is same and a == backtrader_at_t(feeds, calendar, False)
        a, b = vectorbt_at_t(feeds, calendar), vectorbt_at_t(cut(feeds, t), calendar)
        assert bool(np.array_equal(a, b)) is same, calendar
    assert vbt is not None


def test_walk_forward_and_cli_pass_the_calendar(tmp_path, capsys):
    from kronos_alpha.strategies.walk_forward import forecast_settings, load_config

    from kronos_alpha.cli import build_parser, main
    from kronos_alpha.cli.forecast import settings_from

    base = {"data": {"provider_uri": str(tmp_path), "start": "2020-01-02", "end": "2020-06-30"},
            "kronos": {"model": str(tmp_path)}, "lightgbm": {"enabled": False}}  # fmt: skip
    assert forecast_settings(load_config(base)).calendar == "XSHG"  # data.region cn
    us = {**base, "data": {**base["data"], "region": "us"}}
    assert forecast_settings(load_config(us)).calendar == "XNYS"
    given = {**base, "kronos": {**base["kronos"], "calendar": "24/7"}}
    assert forecast_settings(load_config(given)).calendar == "24/7"
    from kronos_alpha.strategies.walk_forward import WalkForwardConfigError

    with pytest.raises(WalkForwardConfigError, match="kronos.calendar 'NOPE' is not an exchange"):
        load_config({**base, "kronos": {**base["kronos"], "calendar": "NOPE"}})
    args = build_parser().parse_args(["forecast", "--calendar", "XHKG"])
    assert settings_from(args).calendar == "XHKG"
    assert main(["forecast", "--sample", "AAPL", "--calendar", "NOPE", "-q"]) == 1
    assert "calendar 'NOPE' is not an exchange name" in capsys.readouterr().err
