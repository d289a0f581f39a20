from inferwatch.serving.routes import Router


def test_known_inference_routes():
    r = Router()
    assert r.match("/v1/models/loan:predict").endpoint == "/v1/models/{model}:predict"
    assert r.match("/v1/models/loan:predict").inference
    assert r.match("/v2/models/loan/infer").endpoint == "/v2/models/{model}/infer"
    assert r.match("/v2/models/loan/versions/3/infer").inference
    assert r.match("/invocations").inference
    assert r.match("/predictions/resnet").endpoint == "/predictions/{model}"


def test_non_inference_and_unknown_routes():
    r = Router()
    meta = r.match("/v1/models/loan")
    assert meta.endpoint == "/v1/models/{model}" and not meta.inference
    assert r.match("/v2/health/ready").endpoint == "/v2/health/ready"
    unknown = r.match("/wp-admin/../../etc/passwd")
    assert unknown.endpoint == "other" and not unknown.inference


def test_configured_templates_come_first():
    r = Router(["/score/{tenant}/{model}"])
    assert r.match("/score/acme/fraud").endpoint == "/score/{tenant}/{model}"
    assert r.match("/score/acme/fraud").inference


def test_cache_is_bounded():
    r = Router(cache_size=10)
    for i in range(1000):
        r.match(f"/random/{i}")
    assert len(r._cache) <= 10
