"""Options analytics, vectorized over whole chains (Black-Scholes-Merton with a continuous dividend yield).

Used by the synthetic chain generator, chain tensorization and the ``options`` feature family, so it lives outside
``features``. Inputs that admit no answer give NaN (with a reason code where one exists), never a wrong number.
"""
from embedtune.options.dynamics import greeks_momentum, option_flow, option_underlying_correlation
from embedtune.options.iv import IVReason, IVResult, implied_vol
from embedtune.options.pricing import bs_cross_greeks, bs_greeks, bs_price
from embedtune.options.risk import RiskResult, max_drawdown_potential, position_var
from embedtune.options.sabr import SABRParams, fit_sabr, sabr_vol
from embedtune.options.surface import (
    SmileParams, atm_vol_at_tenor, local_vol_dupire, smile_params, term_structure_slope,
)

__all__ = [
    "IVReason",
    "IVResult",
    "RiskResult",
    "SABRParams",
    "SmileParams",
    "atm_vol_at_tenor",
    "bs_cross_greeks",
    "bs_greeks",
    "bs_price",
    "fit_sabr",
    "greeks_momentum",
    "implied_vol",
    "local_vol_dupire",
    "max_drawdown_potential",
    "option_flow",
    "option_underlying_correlation",
    "position_var",
    "sabr_vol",
    "smile_params",
    "term_structure_slope",
]
