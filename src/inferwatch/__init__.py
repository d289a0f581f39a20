"""inferwatch: a Prometheus sidecar that watches machine learning models in production."""

__version__ = "0.1.0"
