"""Fit the polynomial of the C++ GELU (csrc/include/reactfast/gelu_dropout.h):
erfcx(z) = exp(z^2) erfc(z) ~ t P(t), t = 1 / (1 + 0.3275911 z), P of degree 9, for the least
maximum relative error on 0 <= z <= 10 (Lawson's reweighted least squares on a dense grid in t).
Prints the coefficients, constant term first, rounded to float32 as the kernel holds them, and the
fit's maximum relative error. Needs numpy and scipy (not dependencies of the package):

    python tools/fit_erfcx.py
"""

import numpy as np
from scipy.special import erfcx

P_SCALE, DEGREE, Z_MAX = 0.3275911, 9, 10.0


def fit(p: float = P_SCALE, degree: int = DEGREE, z_max: float = Z_MAX, rounds: int = 200):
    t_min = 1 / (1 + p * z_max)
    t = np.unique(np.concatenate([np.linspace(t_min, 1, 20000), 1 - np.geomspace(1e-9, 1 - t_min, 5000)]))
    z = (1 / t - 1) / p
    target = erfcx(z) / t                                      # P(t)
    basis = np.vander(t, degree + 1, increasing=True)
    weight = np.ones_like(t)
    for _ in range(rounds):
        scale = weight / target                               # relative error
        coef, *_ = np.linalg.lstsq(basis * scale[:, None], target * scale, rcond=None)
        err = (basis @ coef - target) / target
        weight = weight * np.abs(err) ** 0.5 + 1e-300
        weight /= weight.sum()
    return coef, float(np.abs(err).max())


if __name__ == "__main__":
    coef, err = fit()
    for c in coef:
        print(f"{np.float32(c):.9e}")
    print(f"max relative error {err:.2e}")
