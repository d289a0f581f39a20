"""Request path -> route template, the bounded `endpoint` label.

Labelling by raw path explodes cardinality (prometheus-flask-exporter's lesson), so a path is
matched against templates: the user's from config, then the known routes of common model
servers. Anything else is ``other``.

The proxy forwards the request target byte for byte, so the model server applies its own
normalisation to it; to monitor whatever it serves, a raw path is matched as it came and as
the most normalising servers see it (``normalise_path``), and an inference match on either
wins. Matching too widely costs nothing: only 2xx answers become events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from inferwatch.exposition.metrics import OTHER
from inferwatch.ingest.openai import OPENAI_ROUTES

# Inference routes of common model servers: responses on these are decoded as predictions.
INFERENCE_ROUTES = (
    "/v1/models/{model}:predict",  # KServe v1, TF Serving
    "/v1/models/{model}/versions/{version}:predict",
    "/v1/models/{model}:classify",
    "/v1/models/{model}:regress",
    "/v2/models/{model}/infer",  # Open Inference Protocol v2 (KServe, Triton, MLServer)
    "/v2/models/{model}/versions/{version}/infer",
    "/invocations",  # MLflow, SageMaker
    "/predict",
    "/predictions/{model}",  # TorchServe
    "/api/v1.0/predictions",  # Seldon Core v1 (the executor, in the pod)
    "/seldon/{namespace}/{deployment}/api/v1.0/predictions",  # Seldon Core v1 through its ingress
    "/score",  # Azure ML
    *OPENAI_ROUTES,  # OpenAI-compatible generative serving, also under a prefix (KServe: /openai/v1/...)
)
# Open Inference v2 JSON infer routes: a top-level request ``id`` there is the prediction id.
V2_INFER_ROUTES = frozenset({"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"})
# Known non-inference routes, labelled by template but not decoded.
OTHER_KNOWN_ROUTES = (
    "/v1/models/{model}",
    "/v1/models/{model}/metadata",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{model}",
    "/v2/models/{model}/ready",
    "/v2/models/{model}/versions/{version}",
    "/ping",
    "/health",
    "/healthz",
    "/ready",
    "/readyz",
    "/metadata",
    "/api/v1.0/feedback",  # Seldon Core v1 feedback: labels come as its payload logger's CloudEvents
    "/seldon/{namespace}/{deployment}/api/v1.0/feedback",
    "/version",
    "/",
)

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def compile_template(template: str) -> re.Pattern[str]:
    """``/v1/models/{model}:predict`` -> a regex where a placeholder is one path segment
    that stops at ``:`` too (so ``{model}:predict`` and ``{model}`` stay distinct)."""
    parts = _PLACEHOLDER.split(template)
    pattern = "[^/:]+".join(re.escape(part) for part in parts)
    return re.compile(f"^{pattern}/?$")


def normalise_path(raw_path: str) -> str:
    """The path a normalising server dispatches on: percent-escapes decoded once (``%3A`` ->
    ``:``, ``%2e`` -> ``.``), repeated slashes merged, then ``.`` and ``..`` segments removed
    (RFC 3986 5.2.4; ``..`` never climbs above the root). Query excluded, by the caller."""
    segments: list[str] = []
    for segment in unquote(raw_path, errors="replace").split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


@dataclass(frozen=True)
class Route:
    endpoint: str
    inference: bool


class Router:
    def __init__(self, extra_inference_routes: list[str] | tuple[str, ...] = (), cache_size: int = 4096):
        self._routes = [
            (compile_template(t), Route(t, True)) for t in (*extra_inference_routes, *INFERENCE_ROUTES)
        ] + [(compile_template(t), Route(t, False)) for t in OTHER_KNOWN_ROUTES]
        self._cache: dict[str, Route] = {}
        self._cache_size = cache_size
        self._other = Route(OTHER, False)

    def match(self, raw_path: str) -> Route:
        """The route of a raw path (as received, percent-escapes and all; no query)."""
        route = self._cache.get(raw_path)
        if route is not None:
            return route
        route = self._match_template(raw_path)
        if not route.inference:
            normalised = normalise_path(raw_path)
            if normalised != raw_path:
                other = self._match_template(normalised)
                if other.inference or route is self._other:
                    route = other
        if len(self._cache) >= self._cache_size:  # bounded: unknown paths must not grow memory
            self._cache.clear()
        self._cache[raw_path] = route
        return route

    def _match_template(self, path: str) -> Route:
        for pattern, candidate in self._routes:
            if pattern.match(path):
                return candidate
        return self._other
