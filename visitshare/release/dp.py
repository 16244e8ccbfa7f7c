"""Differentially private counts (OpenDP): noise, its error, and the privacy budget it spends.

Each count table is released per partition (municipality × month) over the public domain of
its cells (every town of the municipality from Japan Post's list, every count column), so a
zero is published like any count and a cell's presence reveals nothing. A record changes the
cells of its own row by a bounded amount (lists are truncated to `max_items_per_list` items
for counting), which gives the L2 sensitivity of the row vector; OpenDP's discrete Gaussian
mechanism adds integer noise calibrated to spend `rho` (zero-concentrated DP) per
publication of the partition. Post-processing (free): negative counts become 0; rates and means
are derived from the noisy counts and withheld where their denominator is within noise.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.96  # the 95% margin of error of Gaussian noise is 1.96 standard deviations


def sigma_for(l2_sensitivity: float, rho: float) -> float:
    """Noise scale that spends `rho` (zCDP) for a query of this L2 sensitivity."""
    return math.ceil(l2_sensitivity) / math.sqrt(2 * rho)


def noisy(values: np.ndarray, l2_sensitivity: float, rho: float) -> tuple[np.ndarray, float, float]:
    """(noisy non-negative integer values, sigma, rho actually spent) via OpenDP."""
    d_in = math.ceil(l2_sensitivity)
    sigma = sigma_for(l2_sensitivity, rho)
    if not values.size:  # nothing to release (a schema made from empty inputs): no sampler
        return values.astype(np.int64), sigma, d_in**2 / (2 * sigma**2)
    import opendp.prelude as dp

    dp.enable_features("contrib")
    measurement = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=sigma
    )
    spent = float(measurement.map(d_in))
    flat = values.astype(np.int64).ravel()
    released = np.asarray(measurement(flat.tolist()), np.int64) if len(flat) else flat
    return np.maximum(released, 0).reshape(values.shape), sigma, spent


def moe95(sigma: float) -> int:
    """The 95% margin of error of a count with this noise (rounded up)."""
    return math.ceil(Z95 * sigma)


def rho_to_epsilon(rho: float, delta: float = 1e-6) -> float:
    """The (ε, δ)-DP guarantee implied by ρ-zCDP (Bun & Steinke 2016, Prop. 1.3)."""
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))
