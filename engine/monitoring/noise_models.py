"""Noise models of the anomaly detector: every observation becomes a normal score, and the
CUSUM of those scores has one null distribution, whatever the series.

A residual means nothing by itself: three events where one was expected is rare, three
degrees on a noisy thermometer is not. So each bucket's value is turned into the normal
score `z = Phi^-1(F(x))` of its probability under the series' own noise model `F`; on data
with no anomaly `z` is (close to) standard normal for a count of 0.3 a bucket and for a
heavy-tailed latency alike, and so is the CUSUM built on it (`cusum_tail`).

- **Counts** (`count_z`): negative binomial with mean `mu` and dispersion `phi`
  (`var = mu + phi * mu**2`; Poisson at `phi = 0`), by the mid-p value `P(X < x) +
  P(X = x) / 2`, summed exactly up to a mean of 1000 and by the Wilson-Hilferty cube root
  of the matching gamma above (where skew is all that is left of discreteness).
- **Gauges** (`gauge_z`): Student t with `nu` degrees of freedom around the baseline, scaled
  so that its median absolute residual is the tracked one (`t_median`); `nu` is read from
  how often residuals pass 4 median absolute residuals (`nu_from_exceedance`): 0.7% for
  normal noise, 6% for t3. Far enough out to measure the tail that decides false alarms
  (a statistic of the body reads noise plus the baseline's own estimation error as lighter
  tailed than the noise is), close enough in to be counted within a few hundred buckets.
  The t-to-normal map is Gaver and Kafadar's `z = sqrt((nu - 2/3 + 1 / (10 nu)) log(1 +
  t**2 / nu))`, a little conservative below nu = 3, which is why `nu` is kept at or above
  `NU_MIN`.

Scores are capped at `Z_MAX`: one bucket can open an alert, but one absurd value cannot
keep it open for long.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from engine.jit import njit

Z_MAX = 8.0
NU_MIN, NU_MAX = 3.0, 1000.0
NU_PRIOR = 5.0
"""Tails a gauge starts from: moderately heavy, so that a heavy-tailed series does not
alarm while its tails are being learnt, at the cost of a little sensitivity on a normal one."""
MU_MIN = 1e-3
"""Smallest mean a count is tested against: after a long run of zeros, one event is a
3-sigma surprise, not an infinite one."""
EXCEED = 4.0  # in median absolute residuals; normal noise passes it 0.7% of the time
_Z75 = 0.6744897501960817  # Phi^-1(0.75): median absolute value of a standard normal
_EXACT_MU = 1000.0

# Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9).
_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690,
      -30.66479806614716, 2.506628277459239)  # fmt: skip
_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
      -13.28068155288572)  # fmt: skip
_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
      4.374664141464968, 2.938163982698783)  # fmt: skip
_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)


@njit
def ndtri(p):
    """Phi^-1(p), -inf at 0 and +inf at 1."""
    if p <= 0.0:
        return -np.inf
    if p >= 1.0:
        return np.inf
    if p < 0.02425 or p > 0.97575:
        q = math.sqrt(-2.0 * math.log(min(p, 1.0 - p)))
        num = ((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]
        den = (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0
        return num / den if p < 0.5 else -num / den
    q = p - 0.5
    r = q * q
    num = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
    return num / den


@njit
def _tail_z(lower, upper):
    """The normal score of a mid-p value given from whichever side is smaller (precision in
    the far tail), capped at +-Z_MAX."""
    if upper < lower:
        z = -ndtri(upper) if upper > 0.0 else Z_MAX
    else:
        z = ndtri(lower) if lower > 0.0 else -Z_MAX
    return min(max(z, -Z_MAX), Z_MAX)


@njit
def count_z(x, mu, phi):
    """Normal score of the count `x` (rounded) under a negative binomial of mean `mu`
    (at least MU_MIN) and dispersion `phi`, by its mid-p value."""
    mu = max(mu, MU_MIN)
    x = max(round(x), 0.0)
    if mu > _EXACT_MU:  # Wilson-Hilferty on the gamma of the same mean and variance
        shape = mu / (1.0 + phi * mu)
        c = 1.0 / (9.0 * shape)
        z = ((x / mu) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)
        return min(max(z, -Z_MAX), Z_MAX)
    poisson = phi < 1e-8
    if poisson:
        logp = x * math.log(mu) - mu - math.lgamma(x + 1.0)
        r = q = 0.0
    else:
        r = 1.0 / phi
        q = mu / (r + mu)
        logp = (
            math.lgamma(x + r) - math.lgamma(r) - math.lgamma(x + 1.0)
            + r * math.log1p(-q) + x * math.log(q)
        )  # fmt: skip
    px = math.exp(logp)
    if x <= mu:  # P(X < x), summed down from x - 1
        acc, term, j = 0.0, px, x
        while j > 0.0:
            term *= j / mu if poisson else j / ((j - 1.0 + r) * q)
            j -= 1.0
            acc += term
            if term < 1e-17 * acc:
                break
        return _tail_z(acc + 0.5 * px, 1.0)
    acc, term, j = 0.0, px, x  # P(X > x), summed up from x + 1
    for _ in range(100000):
        term *= mu / (j + 1.0) if poisson else (j + r) * q / (j + 1.0)
        j += 1.0
        acc += term
        if term < 1e-17 * acc or term == 0.0:
            break
    return _tail_z(1.0, acc + 0.5 * px)


@njit
def _gk(nu):
    return nu - 2.0 / 3.0 + 1.0 / (10.0 * nu)


@njit
def t_to_z(t, nu):
    """Normal score of a Student t value with `nu` degrees of freedom (Gaver-Kafadar)."""
    z = math.sqrt(_gk(nu) * math.log1p(t * t / nu))
    return min(z, Z_MAX) if t >= 0.0 else -min(z, Z_MAX)


@njit
def t_median(nu):
    """Median absolute value of a Student t with `nu` degrees of freedom (its 75th
    percentile), by inverting the same map."""
    return math.sqrt(nu * math.expm1(_Z75 * _Z75 / _gk(nu)))


@njit
def exceedance(nu):
    """Share of a Student t's values beyond EXCEED times its median absolute value."""
    t = EXCEED * t_median(nu)
    return math.erfc(math.sqrt(_gk(nu) * math.log1p(t * t / nu)) / math.sqrt(2.0))


@njit
def nu_from_exceedance(share):
    """The degrees of freedom whose `exceedance` is `share`, within [NU_MIN, NU_MAX]."""
    lo, hi = math.log(NU_MIN), math.log(NU_MAX)
    if share >= exceedance(NU_MIN):
        return NU_MIN
    if share <= exceedance(NU_MAX):
        return NU_MAX
    for _ in range(40):  # exceedance falls as nu grows
        mid = 0.5 * (lo + hi)
        if exceedance(math.exp(mid)) > share:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


@njit
def gauge_z(x, mu, med_abs, nu):
    """Normal score of `x` under a Student t around `mu` whose median absolute deviation
    is `med_abs`."""
    return t_to_z((x - mu) * t_median(nu) / med_abs, nu)


def _phi(v: np.ndarray) -> np.ndarray:
    return 0.5 * np.array([math.erfc(-t / math.sqrt(2.0)) for t in v.ravel()]).reshape(v.shape)


@lru_cache(maxsize=16)
def cusum_tail(k: float, cap: float, ds: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Grid `s` and `P(max(S_up, S_down) >= s)` at any one point of null data, for the
    detector's CUSUM (`anomaly_kernels._cusum`: slack `k`, capped at `cap`, at least halved
    by a step the other way) on independent standard normal scores.

    The one-sided stationary law is found by iterating the CUSUM's transition on a grid of
    `ds`; the two-sided tail is twice the one-sided one (the two sums are rarely both large),
    which overstates it where it is near 1 and is exact enough where alerts are decided.
    """
    n = int(math.ceil(cap / ds)) + 1
    s = ds * np.arange(n)
    edges = s + 0.5 * ds  # upper edge of each bin; the last bin holds the cap
    # C[i, j] = P(S' <= edges[j] | S = s[i]): a step up by z - k, or, for z <= 0, down to
    # at most s / 2.
    diff = np.arange(-n, n + 1) * ds + 0.5 * ds + k  # edges[j] - s[i] + k by j - i
    F = _phi(diff)
    idx = np.arange(n)[None, :] - np.arange(n)[:, None] + n
    up = np.maximum(F[idx] - 0.5, 0.0)
    down = np.where(s[:, None] / 2.0 <= edges[None, :], 0.5, np.minimum(F[idx], 0.5))
    C = up + down
    C[:, -1] = 1.0
    T = np.diff(np.concatenate([np.zeros((n, 1)), C], axis=1), axis=1)
    pi = np.zeros(n)
    pi[0] = 1.0
    for _ in range(2000):
        nxt = pi @ T
        if np.abs(nxt - pi).max() < 1e-15:
            break
        pi = nxt
    tail = np.cumsum(pi[::-1])[::-1]  # P(S >= s[i]) for one side
    return s, np.minimum(2.0 * tail, 1.0)


def threshold_for(alpha: float, k: float, cap_over_h: float) -> float:
    """The CUSUM level `h` whose two-sided null tail is `alpha` (with the cap at
    `cap_over_h * h`): the alert threshold of a false-alarm rate per point."""
    h = 5.0
    for _ in range(3):  # the cap moves with h; its effect on the tail below it is slight
        s, tail = cusum_tail(k, round(cap_over_h * h, 1))
        h = float(np.interp(-math.log(alpha), -np.log(np.maximum(tail, 1e-300)), s))
    return h


def calibrated_score(stat: np.ndarray, k: float, cap: float) -> np.ndarray:
    """`1 - P(max CUSUM >= stat)` under the null: the share of null points that score less."""
    s, tail = cusum_tail(k, round(cap, 1))
    return np.where(stat > 0.0, 1.0 - np.interp(stat, s, tail), 0.0)
