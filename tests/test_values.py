"""One normalisation of values for every stage (ingest/values.py)."""

import math

import numpy as np

from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.values import as_number, category_key
from inferwatch.pipeline.window import Window
from inferwatch.reference import build_profile

VALUES = ["a", 2, 2.0, np.int64(2), True, False, 1.5, math.nan, None, np.float32(3.0)]


def test_category_keys():
    assert [category_key(v) for v in VALUES] == ["a", "2", "2", "2", "true", "false", None, None, None, "3"]
    assert category_key({"a": 1}) is None and category_key([1]) is None


def test_a_reference_profile_and_the_window_spell_categories_alike():
    """The categories a profile counts are the ones the window stores for the same values (1.5 was
    the category "1.5" in a profile and no category in the window)."""
    profile = build_profile({"feature": {"c": VALUES}}, {"c": "categorical"})
    window = Window("v1", capacity=100, max_age_seconds=1e9, feature_kinds={"c": "categorical"})
    window.append(EventBatch(len(VALUES), features={"c": VALUES}))
    column = window.snapshot().features["c"]
    in_window = {c for c in column.category_values() if c is not None}
    assert set(profile.features["c"].categories) - {"other"} == in_window == {"a", "2", "true", "false", "3"}


def test_as_number():
    assert [as_number(v) for v in (True, 2, "1.5", 0.25)] == [1.0, 2.0, 1.5, 0.25]
    assert math.isnan(as_number("x")) and math.isnan(as_number(None))
