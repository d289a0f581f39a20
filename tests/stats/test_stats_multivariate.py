"""PCA reconstruction-error drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from inferwatch.stats import PCAModel


def latent_data(rng: np.random.Generator, n: int, d: int = 12, k: int = 3, noise: float = 0.2) -> np.ndarray:
    """Rows driven by k latent factors plus noise; fixed loadings (seeded separately)."""
    loadings = np.random.default_rng(1234).normal(size=(k, d))
    return rng.normal(size=(n, k)) @ loadings + noise * rng.normal(size=(n, d)) + np.arange(d) * 10


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return latent_data(np.random.default_rng(0), 10_000)


@pytest.fixture(scope="module")
def model(reference) -> PCAModel:
    return PCAModel.fit(reference)


def test_fit_structure(model, reference):
    d = reference.shape[1]
    np.testing.assert_allclose(model.mean, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.scale, reference.std(axis=0), rtol=1e-12)
    k = model.n_components
    assert 1 <= k < d
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(k), atol=1e-10)
    assert model.explained_variance_ratio.sum() >= 0.95
    assert model.explained_variance_ratio[:-1].sum() < 0.95  # the fewest components
    assert model.ref_error_mean > 0 and model.ref_error_std > 0


def test_reconstruction_error_direct_formula(model, reference):
    z = (reference[:50] - model.mean) / model.scale
    proj = z @ model.components.T
    # Pythagoras: residual^2 = |z|^2 - |projection|^2 for orthonormal components.
    direct = ((z * z).sum(axis=1) - (proj * proj).sum(axis=1)) / z.shape[1]
    np.testing.assert_allclose(model.reconstruction_error(reference[:50]), direct, rtol=1e-8, atol=1e-12)
    assert model.reconstruction_error(reference[0]).shape == (1,)


def test_drift_score_near_one_without_drift(model, reference):
    assert model.drift_score(reference) == pytest.approx(1.0, rel=1e-12)
    fresh = latent_data(np.random.default_rng(1), 2000)
    assert 0.9 < model.drift_score(fresh) < 1.1


def test_drift_score_grows_with_shift_and_broken_correlations(model, reference):
    rng = np.random.default_rng(2)
    fresh = latent_data(rng, 2000)
    sd = reference.std(axis=0)
    direction = rng.normal(size=sd.size)  # a direction mostly outside the kept components
    direction -= model.components.T @ (model.components @ direction)
    scores = [model.drift_score(fresh + s * sd * direction / np.abs(direction).max()) for s in (0, 0.25, 0.5, 1, 2)]
    assert np.all(np.diff(scores) > 0), scores
    # Same marginals, correlations destroyed: each column shuffled independently.
    shuffled = np.column_stack([rng.permutation(col) for col in fresh.T])
    assert model.drift_score(shuffled) > 3.0


def test_missing_values_imputed_with_reference_mean(model, reference):
    rows = reference[:5].copy()
    rows[:, 2] = np.nan
    imputed = reference[:5].copy()
    imputed[:, 2] = model.mean[2]
    np.testing.assert_array_equal(model.reconstruction_error(rows), model.reconstruction_error(imputed))
    with_nan = reference.copy()
    with_nan[::3, 0] = np.nan
    fitted = PCAModel.fit(with_nan)
    assert fitted.mean[0] == pytest.approx(np.nanmean(with_nan[:, 0]))
    assert math.isfinite(fitted.drift_score(with_nan))


def test_dict_roundtrip_through_json(model, reference):
    data = json.loads(json.dumps(model.to_dict()))
    assert set(data) >= {"mean", "scale", "components", "ref_error_mean", "ref_error_std", "variance_share"}
    restored = PCAModel.from_dict(data)
    np.testing.assert_array_equal(restored.reconstruction_error(reference[:100]),
                                  model.reconstruction_error(reference[:100]))
    assert restored.drift_score(reference) == model.drift_score(reference)
    with pytest.raises(ValueError):
        PCAModel.from_dict({**data, "scale": data["scale"][:-1]})
    with pytest.raises(ValueError):
        PCAModel.from_dict({**data, "version": 99})


def test_variance_share_controls_components(reference):
    few = PCAModel.fit(reference, variance_share=0.5)
    many = PCAModel.fit(reference, variance_share=0.999)
    assert few.n_components <= many.n_components <= reference.shape[1] - 1
    with pytest.raises(ValueError):
        PCAModel.fit(reference, variance_share=0.0)


def test_edge_cases():
    rng = np.random.default_rng(3)
    one = PCAModel.fit(rng.normal(5, 2, size=(1000, 1)))
    assert one.n_components == 0  # error is the squared z-score
    assert one.drift_score(rng.normal(5, 2, size=(20_000, 1))) == pytest.approx(1.0, abs=0.05)
    assert one.drift_score(rng.normal(9, 2, size=(500, 1))) > 3
    const = PCAModel.fit(np.ones((10, 3)))
    assert const.drift_score(np.ones((4, 3))) == 1.0
    assert const.drift_score(np.full((4, 3), 2.0)) == math.inf
    assert math.isnan(one.drift_score(np.empty((0, 1))))
    with pytest.raises(ValueError):
        PCAModel.fit(np.ones((1, 3)))
    with pytest.raises(ValueError):
        one.reconstruction_error(np.ones((2, 4)))
