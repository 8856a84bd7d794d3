"""Black-Scholes-Merton implied volatility of whole chains; the solver is the compiled kernel in ``nb.py``.

Where a price admits no volatility (expired, outside the no-arbitrage bounds) the vol is NaN together with a
reason code, never a plausible-looking wrong number.
"""
from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from embedtune.options import nb
from embedtune.options._inputs import _floats, _sign


class IVReason(IntEnum):
    """Why an implied volatility is NaN (``OK`` when it is not)."""

    OK = nb.IV_OK
    #: price < discounted intrinsic value (S e^{-qT} - K e^{-rT} for calls, the reverse for puts).
    BELOW_INTRINSIC = nb.IV_BELOW_INTRINSIC
    #: price >= the no-arbitrage upper bound S e^{-qT} (calls) or K e^{-rT} (puts).
    ABOVE_MAX = nb.IV_ABOVE_MAX
    #: t <= 0.
    EXPIRED = nb.IV_EXPIRED
    #: price, spot or strike <= 0.
    NONPOSITIVE_INPUT = nb.IV_NONPOSITIVE_INPUT
    #: the safeguarded iteration did not meet the tolerance (not observed on the tested domain).
    NO_CONVERGENCE = nb.IV_NO_CONVERGENCE
    #: an in-the-money price whose time value is lost in the rounding of its intrinsic value: every small vol fits.
    NO_TIME_VALUE = nb.IV_NO_TIME_VALUE
    #: a NaN or infinite input.
    NAN_INPUT = nb.IV_NAN_INPUT


class IVResult(NamedTuple):
    """Implied vols (NaN where none fits) and an ``int8`` ``IVReason`` code per option."""

    vol: np.ndarray
    reason: np.ndarray


def implied_vol(
    price: ArrayLike, spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike,
    right: ArrayLike, *, tol: float = 1e-12,
) -> IVResult:
    """Black-Scholes-Merton implied volatility, broadcast over all inputs.

    ``tol`` is the relative tolerance on ``vol sqrt(t)``. The solver (see ``nb.py``) inverts the normalized price of
    the out-of-the-money equivalent option, so deep in/out-of-the-money and near-expiry options reprice to
    ~1e-13 of the spot; inputs that admit no volatility get NaN and an ``IVReason``.
    """
    w = _sign(right)
    arrays = np.broadcast_arrays(*_floats(price, spot, strike, t, rate, div), w)
    shape = arrays[0].shape
    flat = [np.ascontiguousarray(a, dtype=float).reshape(-1) for a in arrays]
    n = flat[0].shape[0]
    vol = np.empty(n)
    reason = np.empty(n, dtype=np.int8)
    iterations = np.empty(n, dtype=np.int32)
    nb.implied_vol_nb(*flat, float(tol), vol, reason, iterations)
    return IVResult(vol.reshape(shape), reason.reshape(shape))
