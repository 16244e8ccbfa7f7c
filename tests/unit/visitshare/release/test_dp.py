"""Differentially private counts: calibration, budget, and the error the release states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visitshare.release import dp


@pytest.mark.parametrize(("l2", "rho"), [(1.0, 0.5), (math.sqrt(2), 0.25), (5.57, 0.5)])
def test_the_spend_is_the_budget_asked_for(l2, rho):
    _, sigma, spent = dp.noisy(np.zeros((3, 4), np.int64), l2, rho)
    assert sigma == dp.sigma_for(l2, rho)
    assert spent == pytest.approx(rho)  # OpenDP's own accounting: ρ = Δ² / 2σ²


def test_noisy_counts_are_non_negative_integers_of_the_same_shape():
    values = np.array([[0, 3], [100, 7]])
    noisy, _, _ = dp.noisy(values, 1.0, 0.5)
    assert noisy.shape == values.shape and noisy.dtype == np.int64 and (noisy >= 0).all()


def _discrete_gaussian_within(sigma: float, margin: int) -> float:
    """P(|X| <= margin) for the discrete Gaussian of scale sigma (from its pmf)."""
    xs = np.arange(-40 * int(sigma) - 40, 40 * int(sigma) + 41)
    w = np.exp(-(xs.astype(float) ** 2) / (2 * sigma**2))
    return float(w[np.abs(xs) <= margin].sum() / w.sum())


def test_the_stated_95_percent_margin_holds():
    """Around a true count far from zero (no clipping), at least 95% of the noisy counts fall
    within the published margin (rounded up, so a little more), as the distribution says.
    OpenDP's sampler cannot be seeded: the bounds are 5 standard errors of 20,000 draws."""
    true = np.full(20_000, 1_000)
    noisy, sigma, _ = dp.noisy(true, math.sqrt(31), 0.5)
    margin = dp.moe95(sigma)
    expected = _discrete_gaussian_within(sigma, margin)
    assert expected >= 0.95
    within = (np.abs(noisy - true) <= margin).mean()
    se = math.sqrt(expected * (1 - expected) / len(true))
    assert abs(within - expected) <= 5 * se
    assert abs(np.std(noisy - true) / sigma - 1) < 0.05


def test_rho_converts_to_epsilon_delta():
    assert dp.rho_to_epsilon(0.5) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))
    assert dp.rho_to_epsilon(1.0) > dp.rho_to_epsilon(0.5)
