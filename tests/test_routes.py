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


def test_normalise_path_decodes_merges_and_removes_dot_segments():
    from inferwatch.serving.routes import normalise_path

    assert normalise_path("/v1/models/./x:predict") == "/v1/models/x:predict"
    assert normalise_path("/v1/models/x%3Apredict") == "/v1/models/x:predict"
    assert normalise_path("/v1//models///x:predict/") == "/v1/models/x:predict"
    assert normalise_path("/v1/models/%2e%2e/v1/models/x:predict") == "/v1/v1/models/x:predict"
    assert normalise_path("/%2e%2e/%2e%2e/etc/passwd") == "/etc/passwd"   # never above the root
    assert normalise_path("/%zz") == "/%zz"   # not an escape: left alone
    assert normalise_path("/") == "/"


def test_spellings_a_model_server_may_serve_route_like_the_plain_path():
    r = Router()
    for path in ("/v1/models/./x:predict", "/v1/models/x%3Apredict", "/v1//models/x:predict",
                 "/v1/models/y/../x:predict", "/v1/models/%2e/x:predict", "//v2/models/x/infer"):
        route = r.match(path)
        assert route.inference, path
        assert route.endpoint in ("/v1/models/{model}:predict", "/v2/models/{model}/infer"), path
    # a server that dispatches on raw bytes sees one segment here, and serves it: so do we
    assert r.match("/v1/models/a%2Fb:predict").inference
    assert r.match("/v1/models/./x").endpoint == "/v1/models/{model}"
    assert r.match("/v1/models/x/../../../etc").endpoint == "other"
