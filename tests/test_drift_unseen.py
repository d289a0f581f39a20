"""New categories (issue 19): the reference's full set of values, and the unseen-share decision.

The profile keeps every category a column held (exact up to 10,000, then a Bloom filter), the
windows flag values the reference never held as they are written (so values filed under the
window's ``other`` code still count), and the evaluator tests their share against the rate of
new values the reference itself predicts, in the same corrected family as every other test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from inferwatch.config import parse_config
from inferwatch.ingest.events import EventBatch
from inferwatch.monitors.drift import Evaluator, PreparedReference
from inferwatch.pipeline.window import Window, WindowStore
from inferwatch.reference import ReferenceProfile, build_profile, content_hash
from inferwatch.stats.seen import SeenValues, expected_unseen_rate, hash_keys, unseen_test

LEVELS = [f"level{i:03d}" for i in range(300)]


def _level_probabilities() -> np.ndarray:
    w = 1.0 / np.arange(1, 301) ** 0.8  # Zipf-like: the top levels hold much of the mass
    return w / w.sum()


def _levels(n: int, rng: np.random.Generator, new_share: float = 0.0) -> list[str]:
    values = rng.choice(LEVELS, n, p=_level_probabilities()).astype(object)
    if new_share:
        values[rng.random(n) < new_share] = "brand_new_level"
    return values.tolist()


def _profile(n: int = 50_000, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    return build_profile({"feature": {"merchant": _levels(n, rng), "amount": rng.normal(0, 1, n)}})


def _evaluate(profile: ReferenceProfile, cols: dict[str, list], **drift):
    n = len(next(iter(cols.values())))
    store = WindowStore(capacity=n, max_age_seconds=1e9, max_versions=4)
    store.seed_categories({k: list(c.categories) for k, c in profile.features.items() if c.kind == "categorical"},
                          {})
    store.watch_unseen({k: c.seen for k, c in profile.features.items() if c.kind == "categorical"}, {})
    window = store.get("1")
    window.append(EventBatch(n, features=cols, outputs={}))
    ev = Evaluator(PreparedReference.build(profile), parse_config({"drift": drift}).drift)
    return ev.evaluate(window.snapshot())


def _column(result, name: str):
    return next(c for c in result.features if c.name == name)


# --- the set and its hashing ---------------------------------------------------------------------------


def test_hashing_is_vectorised_yet_per_key_and_the_exact_set_turns_into_a_bloom_filter():
    keys = [f"k{i}" for i in range(30_000)] + ["", "é", "a much longer key with spaces ✓"]
    hashes = hash_keys(keys)
    assert np.unique(hashes).size == len(keys)
    assert hash_keys(["k5"])[0] == hashes[5] and hash_keys(["é"])[0] == hashes[-2]  # one key, same hash
    seen = SeenValues(exact_max=10_000)
    seen.add(keys[:20_000])
    assert not seen.is_exact and seen.contains(keys[:20_000]).all()
    seen.fold()  # sized for the keys it holds, at most the target false-positive rate
    assert seen.n_bits < 1 << 23 and seen.false_positive_rate <= 0.001
    never = [f"never{i}" for i in range(200_000)]
    observed = seen.contains(never).mean()
    assert observed < 0.002  # the documented 0.1% (with room for chance)
    again = SeenValues.from_dict(json.loads(json.dumps(seen.to_dict())))
    assert again.contains(keys[:20_000]).all() and again.false_positive_rate == seen.false_positive_rate


def test_seen_sets_merge_like_one_pass():
    keys = [f"id{i}" for i in range(40_000)]
    one = SeenValues()
    one.add(keys)
    parts = [SeenValues() for _ in range(4)]
    for i, part in enumerate(parts):
        part.add(keys[i * 10_000:(i + 1) * 10_000])  # each exact on its own (10,000 keys)
    parts[3].add(["extra"])  # this one turned into a filter
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.contains(keys + ["extra"]).all()
    np.testing.assert_array_equal(merged.bits | one.bits, merged.bits)  # the same bits as one pass, plus "extra"
    small = SeenValues()
    small.add(["a", "b"])
    other = SeenValues()
    other.add(["c"])
    small.merge(other)
    assert small.is_exact and small.exact == {"a", "b", "c"}


def test_the_unseen_test_is_a_one_sided_binomial_against_the_expected_rate():
    assert expected_unseen_rate(0, 999) == pytest.approx(1 / 1000)
    assert unseen_test(0, 1000, 0.001) == 1.0
    assert unseen_test(50, 1000, 0.001) < 1e-50
    assert 0.2 < unseen_test(2, 1000, 0.001) < 0.3  # 2 new values where 1 is expected: chance


# --- the profile ------------------------------------------------------------------------------------------


def test_the_profile_records_every_category_and_the_expected_rate_of_new_ones(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"user{i}" for i in rng.integers(0, 15_000, 60_000)]
    profile = build_profile({"feature": {"merchant": _levels(20_000, rng) * 3, "user": ids}})
    merchant, user = profile.features["merchant"], profile.features["user"]
    assert merchant.seen.is_exact and merchant.seen.exact == set(merchant.seen.exact) and len(merchant.seen.exact) > 250
    assert merchant.expected_unseen < 1e-3  # every level seen many times
    assert not user.seen.is_exact and user.seen.contains(sorted(set(ids))).all()
    # about 15,000 users, 4 rows each: about 1,100 seen once, so new ones are expected now and then
    assert 0.012 < user.expected_unseen < 0.025
    path = tmp_path / "p.json"
    profile.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 4 and data["seen"]["version"] == 1
    assert data["seen"]["features"]["user"]["bloom"]["false_positive_rate"] <= 0.001
    loaded = ReferenceProfile.load(path)
    assert loaded.features["user"].seen.contains(sorted(set(ids))).all()
    assert loaded.features["merchant"].expected_unseen == merchant.expected_unseen


def test_a_format_3_profile_still_loads_and_new_categories_count_as_before(tmp_path):
    profile = _profile(20_000)
    data = profile.to_dict()
    for section in ("seen", "multivariate_thresholds"):
        del data[section]
    data["version"] = 3
    data["hash"] = content_hash(data)
    path = tmp_path / "v3.json"
    path.write_text(json.dumps(data))
    old = ReferenceProfile.load(path)
    assert old.version == 3 and old.features["merchant"].seen is None and old.multivariate_thresholds is None
    rng = np.random.default_rng(5)
    result = _evaluate(old, {"merchant": _levels(10_000, rng, new_share=0.05), "amount": list(rng.normal(0, 1, 10_000))})
    merchant = _column(result, "merchant")
    assert "unseen" not in merchant.p_values and merchant.statistics["unseen_ratio"] == 0.0  # invisible, as before
    assert not result.multivariate_drifted


# --- the decision -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("events", [1_000, 10_000, 100_000])
def test_a_new_category_in_5_percent_of_rows_of_a_300_level_column_is_decided(events):
    profile = _profile()
    rng = np.random.default_rng(events)
    result = _evaluate(profile, {"merchant": _levels(events, rng, new_share=0.05),
                                 "amount": list(rng.normal(0, 1, events))})
    merchant = _column(result, "merchant")
    assert merchant.drifted and result.dataset_drifted
    assert any(e.view == "unseen" and e.drifted for e in merchant.evidence)
    assert merchant.statistics["unseen_ratio"] == pytest.approx(0.05, abs=0.02)
    assert not _column(result, "amount").drifted


def test_new_values_filed_under_the_windows_other_code_still_count():
    profile = _profile(20_000)
    rng = np.random.default_rng(3)
    values = _levels(5_000, rng)
    news = [f"new{i}" for i in range(500)]  # 500 distinct new values: far past the window's 64 codes
    for i, row in enumerate(rng.choice(5_000, 500, replace=False)):
        values[row] = news[i]
    result = _evaluate(profile, {"merchant": values, "amount": list(rng.normal(0, 1, 5_000))})
    merchant = _column(result, "merchant")
    assert merchant.statistics["unseen_ratio"] == pytest.approx(0.1)
    assert merchant.drifted


def test_a_stationary_300_level_column_does_not_alarm_more_than_the_per_feature_rule_allows():
    profile = _profile()
    prepared = PreparedReference.build(profile)
    ev = Evaluator(prepared, parse_config({"drift": {}}).drift)
    rng = np.random.default_rng(42)
    alarms = 0
    trials = 300
    for _ in range(trials):
        n = 2_000
        window = Window("1", capacity=n, max_age_seconds=1e9)
        window.features.seed({"merchant": list(profile.features["merchant"].categories)})
        window.features.watch_unseen({"merchant": profile.features["merchant"].seen})
        window.append(EventBatch(n, features={"merchant": _levels(n, rng)}, outputs={}))
        alarms += _column(ev.evaluate(window.snapshot()), "merchant").drifted
    # drift.alpha = 0.01 per evaluation for the family; 300 windows: about 3 at the very most by chance.
    assert alarms <= 6, alarms
