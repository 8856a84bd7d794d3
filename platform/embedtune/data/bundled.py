"""Small real datasets shipped inside the package, so examples and tests run offline from a wheel.

The files are gzip copies of ``/work/shared/data`` (public end-of-day/hourly bars from the test data of the PyPI
package ``backtesting``); they go through the same validation as any user file. The universe ``us_large_caps``
(``BUNDLED_UNIVERSES``, loaded by ``embedtune.data.universe``) is skfolio's ``sp500_dataset`` and ``sp500_index``,
unmodified, under BSD-3-Clause (``bundled/LICENSE-skfolio.txt``).
"""
from __future__ import annotations

from importlib.resources import as_file, files

from embedtune.data.loaders import load_bars
from embedtune.data.market import MarketData
from embedtune.errors import EmbedtuneError

#: Bundled dataset name -> file inside ``embedtune/data/bundled``.
BUNDLED: dict[str, str] = {
    "goog_daily": "goog_daily.csv.gz",
    "eurusd_hourly": "eurusd_hourly.csv.gz",
}

_ORIGINS: dict[str, str] = {
    "goog_daily": "Alphabet (GOOG) daily OHLCV 2004-08-19..2013-03-01, backtesting package test data",
    "eurusd_hourly": "EUR/USD hourly OHLC + tick volume 2017-04-19..2018-02-07, backtesting package test data",
    "us_large_caps": "20 US large-cap daily adjusted closes 1990-2022, skfolio sp500_dataset, BSD-3",
}

#: Bundled cross-sectional universes (``embedtune.data.universe``), kept apart from ``BUNDLED`` because they are not
#: one instrument's bars: name -> (wide close file: date + one column per symbol, benchmark index file, licence file).
BUNDLED_UNIVERSES: dict[str, tuple[str, str, str]] = {
    "us_large_caps": ("us_large_caps.csv.gz", "us_large_caps_index.csv.gz", "LICENSE-skfolio.txt"),
}


class UnknownBundledDataError(EmbedtuneError, KeyError):
    """An unknown bundled name; a ``KeyError`` for callers, a one-line user error for the CLI."""

    def __str__(self) -> str:
        return str(self.args[0])


def load_bundled(name: str, price: str = "close") -> MarketData:
    """Load one bundled dataset as real (``synthetic=False``) market data (``price``: see ``load_bars``)."""
    if name not in BUNDLED:
        raise UnknownBundledDataError(
            f"unknown bundled dataset '{name}'; available: {', '.join(sorted(BUNDLED))}"
        )
    resource = files("embedtune.data").joinpath("bundled", BUNDLED[name])
    with as_file(resource) as path:
        bars = load_bars(path, price)
    return MarketData(
        name=name, bars=bars, source=f"bundled:{name}", synthetic=False,
        notes={"origin": _ORIGINS[name], "file": BUNDLED[name]},
    )
