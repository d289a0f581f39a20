"""Builder states merge into the profile of one pass (the public merge API of the reference builder)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from inferwatch.reference.builder import ProfileBuilder, merge_bin_counts, merge_states
from profile_equality import assert_same_profile

SPEC = {"feature": {"x": "numeric", "y": "numeric", "colour": "categorical"},
        "output": {"score": "numeric"}, "label": {"label": "categorical"}}


def _data(rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 2.0, rows)
    x[rng.random(rows) < 0.1] = np.nan
    y = rng.integers(0, 4, rows).astype(float)  # heavy ties: merged bin edges
    colour = [None if r < 0.05 else c for r, c in zip(rng.random(rows), rng.choice(["red", "green", "blue", "x" * 3],
                                                                                       rows))]
    score = rng.random(rows)
    label = [int(s + rng.normal(0, 0.3) > 0.5) for s in score]
    return {"x": x, "y": y, "colour": colour, "score": score, "label": label}


def _part(data: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in data.items()}


def _one_pass(data: dict, rows: int, chunk: int, **kw) -> ProfileBuilder:
    b = ProfileBuilder(SPEC, **kw)
    for lo in range(0, rows, chunk):
        b.observe(_part(data, lo, lo + chunk))
    b.freeze()
    if b.needs_second_pass:
        for lo in range(0, rows, chunk):
            b.count_bins(_part(data, lo, lo + chunk))
    return b


def _merged(data: dict, rows: int, cuts: list[int], order: list[int], **kw) -> ProfileBuilder:
    bounds = [0, *cuts, rows]
    parts = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    states = []
    for lo, hi in parts:  # each partition on its own builder, told where its rows start
        b = ProfileBuilder(SPEC, **kw)
        b.observe(_part(data, lo, hi), row_offset=lo)
        states.append(pickle.loads(pickle.dumps(b)))  # as an engine ships it
    merged = merge_states([states[i] for i in order])
    merged.freeze()
    if merged.needs_second_pass:
        edges = pickle.loads(pickle.dumps(merged.bin_edges()))
        merged.add_bin_counts(merge_bin_counts(edges.count(_part(data, lo, hi)) for lo, hi in parts))
    return merged


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 900), k=st.integers(1, 6), sample_size=st.sampled_from([2, 50, 400, 2000]),
       chunk=st.integers(1, 300), seed=st.integers(0, 2**31), data_seed=st.integers(0, 1000), shuffle=st.randoms())
def test_merging_k_parts_in_any_order_equals_one_pass(rows, k, sample_size, chunk, seed, data_seed, shuffle):
    data = _data(rows, data_seed)
    cuts = sorted(shuffle.sample(range(1, rows), min(k - 1, rows - 1))) if rows > 1 else []
    order = list(range(len(cuts) + 1))
    shuffle.shuffle(order)
    kw = dict(sample_size=sample_size, bins=10, seed=seed)
    assert_same_profile(_merged(data, rows, cuts, order, **kw).build(), _one_pass(data, rows, chunk, **kw).build())


def test_the_state_pickles_to_about_the_sample():
    data = _data(50_000, 1)
    b = ProfileBuilder(SPEC, sample_size=1000)
    b.observe(data)
    # 1000 rows x (3 numeric + key) x 8 bytes, the label sample and the small counters.
    assert len(pickle.dumps(b)) < 100_000
    b.freeze()
    assert len(pickle.dumps(b.bin_edges())) < 2000  # what the second pass ships to every partition


def test_overlapping_row_ids_are_refused():
    data = _data(100, 2)
    a, b = ProfileBuilder(SPEC, sample_size=500), ProfileBuilder(SPEC, sample_size=500)
    a.observe(_part(data, 0, 50))
    b.observe(_part(data, 50, 100))  # no row_offset: ids 0..49 again
    with pytest.raises(ValueError, match="disjoint row_offset"):
        a.merge(b)


def test_different_settings_or_a_frozen_builder_do_not_merge():
    a, b = ProfileBuilder(SPEC, bins=10), ProfileBuilder(SPEC, bins=5)
    with pytest.raises(ValueError, match="settings"):
        a.merge(b)
    c = ProfileBuilder(SPEC, bins=10)
    c.freeze()
    with pytest.raises(RuntimeError, match="before freeze"):
        a.merge(c)


def test_disjoint_ids_other_than_positions_still_give_a_uniform_sample():
    """Partition index << 40 as ids (an engine that cannot count rows first): a different but
    uniform sample: the sample mean of 0..N-1 lands near the middle."""
    rows, parts = 200_000, 8
    values = np.arange(rows, dtype=float)
    states = []
    for i in range(parts):
        b = ProfileBuilder({"feature": {"v": "numeric"}}, sample_size=5000)
        b.observe({"v": values[i * rows // parts:(i + 1) * rows // parts]}, row_offset=i << 40)
        states.append(b)
    merged = merge_states(states)
    sample = merged._sample[:, 0]
    assert sample.size == 5000
    assert abs(sample.mean() - rows / 2) < 4 * rows / np.sqrt(12 * 5000)
    counts = np.bincount((sample * parts // rows).astype(int), minlength=parts)
    assert counts.min() > 5000 / parts * 0.8


def test_a_single_pass_does_not_depend_on_its_chunk_size():
    data = _data(3000, 3)
    a = _one_pass(data, 3000, 700, sample_size=100, seed=7).build()
    b = _one_pass(data, 3000, 1000, sample_size=100, seed=7).build()
    assert_same_profile(a, b)
