"""A small but real model: logistic regression for loan approval, trained with numpy.

Training data is generated at start with a fixed seed, so every demo run serves the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUMERIC = ("income", "debt_ratio", "credit_history_years", "loan_amount", "age")
CATEGORICAL = {"employment": ("salaried", "self_employed", "contractor", "unemployed"),
               "region": ("north", "south", "east", "west")}
FEATURES = (*NUMERIC, *CATEGORICAL)


def generate(n: int, rng: np.random.Generator, *, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Applicants. ``shift`` in [0, 1] moves the population: lower incomes, more debt, more contractors."""
    income = rng.lognormal(mean=10.8 - 0.35 * shift, sigma=0.45, size=n)
    debt_ratio = np.clip(rng.beta(2.0 + 2.5 * shift, 5.0, size=n), 0, 1)
    history = np.clip(rng.gamma(shape=4.0, scale=2.5 * (1 - 0.4 * shift), size=n), 0, 50)
    loan = rng.lognormal(mean=9.6 + 0.25 * shift, sigma=0.6, size=n)
    age = np.clip(rng.normal(41 - 6 * shift, 11, size=n), 18, 90)
    employment_p = np.array([0.62, 0.18, 0.15, 0.05]) * (1 - shift) + np.array([0.35, 0.15, 0.4, 0.1]) * shift
    employment = rng.choice(CATEGORICAL["employment"], size=n, p=employment_p / employment_p.sum())
    region = rng.choice(CATEGORICAL["region"], size=n, p=[0.3, 0.25, 0.25, 0.2])
    return {"income": income.round(2), "debt_ratio": debt_ratio.round(4), "credit_history_years": history.round(1),
            "loan_amount": loan.round(2), "age": age.round(0), "employment": employment, "region": region}


def typical_values(seed: int = 3) -> dict[str, object]:
    """Medians (numeric) and modes (categorical) of the applicants: what a tolerant server fills in."""
    data = generate(5000, np.random.default_rng(seed))
    out: dict[str, object] = {name: float(np.median(data[name])) for name in NUMERIC}
    for name in CATEGORICAL:
        values, counts = np.unique(data[name], return_counts=True)
        out[name] = str(values[np.argmax(counts)])
    return out


def repayment_probability(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The demo's ground truth: the chance an applicant repays. Affordability and history drive it;
    the model is trained on outcomes drawn from it, and the demo's delayed labels are too."""
    logit = (1.4 * (np.log(np.asarray(columns["income"], float)) - 10.8)
             - 4.0 * (np.asarray(columns["debt_ratio"], float) - 0.3)
             + 0.12 * (np.asarray(columns["credit_history_years"], float) - 10)
             - 0.6 * (np.log(np.asarray(columns["loan_amount"], float)) - 9.6)
             - 1.2 * (np.asarray(columns["employment"]) == "unemployed") + 1.0)
    return 1 / (1 + np.exp(-logit))


def design_matrix(columns: dict[str, np.ndarray], mean: np.ndarray | None = None, std: np.ndarray | None = None):
    numeric = np.column_stack([np.log1p(np.asarray(columns["income"], float)), np.asarray(columns["debt_ratio"], float),
                               np.asarray(columns["credit_history_years"], float),
                               np.log1p(np.asarray(columns["loan_amount"], float)), np.asarray(columns["age"], float)])
    if mean is None:
        mean, std = numeric.mean(axis=0), numeric.std(axis=0) + 1e-9
    onehots = [(np.asarray(columns[name]) == level).astype(float)[:, None]
               for name, levels in CATEGORICAL.items() for level in levels[1:]]
    return np.hstack([(numeric - mean) / std, *onehots, np.ones((len(numeric), 1))]), mean, std


@dataclass
class LoanModel:
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def train(cls, n: int = 20_000, seed: int = 7, epochs: int = 300, lr: float = 0.5) -> "LoanModel":
        rng = np.random.default_rng(seed)
        data = generate(n, rng)
        X, mean, std = design_matrix(data)
        y = (rng.random(n) < repayment_probability(data)).astype(float)
        w = np.zeros(X.shape[1])
        for _ in range(epochs):  # batch gradient descent: small data, a few hundred steps
            p = 1 / (1 + np.exp(-X @ w))
            w -= lr * X.T @ (p - y) / n
        return cls(w, mean, std)

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        X, _, _ = design_matrix(columns, self.mean, self.std)
        return 1 / (1 + np.exp(-X @ self.weights))
