"""Always-valid p-values: the mixture sequential probability ratio test (mSPRT) with a normal mixture.

Johari, Koomen, Pekelis & Walsh (2017), "Peeking at A/B Tests: Why it matters, and what to do about it" (KDD),
and Johari, Pekelis & Walsh, "Always Valid Inference" (Operations Research 2022). For an estimate
``theta_hat_n`` of the difference in means with (plug-in) variance ``V_n`` and a ``N(theta0, tau^2)`` mixture
over the alternative, the mixture likelihood ratio is

    Lambda_n = sqrt(V_n / (V_n + tau^2)) * exp( tau^2 (theta_hat_n - theta0)^2 / (2 V_n (V_n + tau^2)) ),

which for equal arms of n observations with variance sigma^2 each (V_n = 2 sigma^2 / n) is the paper's
``sqrt(2 sigma^2/(2 sigma^2 + n tau^2)) exp(n^2 tau^2 (Ybar - Xbar - theta0)^2 / (4 sigma^2 (2 sigma^2 + n tau^2)))``.
The always-valid p-value is ``p_n = min(1, min_{k<=n} 1/Lambda_k)``; by Ville's inequality
``P(exists n: p_n <= alpha) <= alpha`` under the null, so the experiment may be stopped at any peek.
Variances are plug-in estimates (the paper's large-sample treatment); ``min_n`` skips the first looks where
they are unreliable. ``tau`` is the prior scale of the effect: by default 0.2 pooled standard deviations.
"""

from __future__ import annotations

import numpy as np

from qmlops.exceptions import ValidationError

__all__ = ["msprt_lambda", "msprt_p_values", "always_valid_p_value"]


def msprt_lambda(theta_hat: np.ndarray, variance: np.ndarray, tau2: np.ndarray | float,
                 theta0: float = 0.0) -> np.ndarray:  # fmt: skip
    """Normal-mixture likelihood ratio ``Lambda`` (elementwise); computed in logs for stability."""
    v = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    d = np.asarray(theta_hat, dtype=np.float64) - theta0
    log_lam = 0.5 * np.log(v / (v + t2)) + t2 * d**2 / (2.0 * v * (v + t2))
    return np.exp(np.minimum(log_lam, 700.0))


def always_valid_p_value(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int,
                         tau2: float, previous: float = 1.0, theta0: float = 0.0) -> float:  # fmt: skip
    """One update of the always-valid p-value for unequal arms: ``V = var_a/n_a + var_b/n_b``;
    returns ``min(previous, 1/Lambda)``. Feed the returned value back as ``previous`` at the next look."""
    if n_a < 2 or n_b < 2:
        return previous
    v = var_a / n_a + var_b / n_b
    if v <= 0:
        return previous
    lam = float(msprt_lambda(np.array(mean_b - mean_a), np.array(v), tau2, theta0))
    return min(previous, 1.0 / lam, 1.0)


def msprt_p_values(control: np.ndarray, treatment: np.ndarray, *, tau: float | None = None, theta0: float = 0.0,
                   min_n: int = 20) -> np.ndarray:  # fmt: skip
    """Always-valid p-values after each pair of observations, for paired streams along the last axis.

    ``control`` and ``treatment`` have shape (..., n) (leading axes are e.g. simulation repetitions); the
    result has the same shape, non-increasing along the last axis, 1 before ``min_n`` pairs. Variances are the
    running sample variances of each arm; ``tau`` defaults to 0.2 times the running pooled standard deviation
    (a small standardised effect; Johari et al. calibrate tau to the effects expected in past experiments).
    """
    a = np.asarray(control, dtype=np.float64)
    b = np.asarray(treatment, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] < 2:
        raise ValidationError("control and treatment streams need the same shape and >= 2 observations",
                              field="treatment")  # fmt: skip
    n = np.arange(1, a.shape[-1] + 1, dtype=np.float64)

    def running(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s1, s2 = np.cumsum(x, axis=-1), np.cumsum(x * x, axis=-1)
        mean = s1 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum(s2 - n * mean**2, 0.0) / np.maximum(n - 1, 1)
        return mean, var

    ma, va = running(a)
    mb, vb = running(b)
    if tau is None:
        tau2: np.ndarray | float = (0.2**2) * 0.5 * (va + vb)
    else:
        tau2 = float(tau) ** 2
    v = (va + vb) / n
    valid = (n >= max(min_n, 2)) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = msprt_lambda(mb - ma, np.where(valid, v, 1.0), tau2, theta0)
    p = np.where(valid, np.minimum(1.0, 1.0 / lam), 1.0)
    return np.minimum.accumulate(p, axis=-1)
