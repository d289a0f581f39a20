"""A profile on Spark with the public merge API (docs/reference-profile.md, "Profiles on a cluster"):
the recipe of the docs, run on a real local Spark (two executor threads, Python workers), gives
the profile of one process on the same rows."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferwatch.reference import build_profile_from_file
from inferwatch.reference.builder import merge_bin_counts, merge_states
from inferwatch.reference.distributed import count_frames, observe_frames
from inferwatch.reference.readers import plan_columns
from profile_equality import assert_same_profile

pytestmark = [pytest.mark.timeout(300),   # a JVM on a loaded 2-core machine: generous, never a bound
              pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)   # the workers must import inferwatch: this venv's
        session = (SparkSession.builder.master("local[2]").appName("inferwatch-test")
                   .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.driver.host", "127.0.0.1").config("spark.sql.shuffle.partitions", "2")
                   .config("spark.sql.execution.arrow.maxRecordsPerBatch", "700")   # several batches a partition
                   .getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


def test_the_documented_spark_recipe_equals_one_process(spark, tmp_path):
    rng = np.random.default_rng(11)
    rows = 5000
    x = rng.normal(3.0, 1.5, rows)
    x[rng.random(rows) < 0.05] = np.nan
    score = rng.random(rows)
    table = pa.table({"x": x, "n": rng.integers(0, 7, rows).astype(float),
                      "city": [None if r < 0.03 else c for r, c in zip(rng.random(rows),
                                                                        rng.choice(["oslo", "rome", "lima"], rows))],
                      "score": score, "label": ["yes" if s + rng.normal(0, 0.3) > 0.5 else "no" for s in score]})
    path = str(tmp_path / "train.parquet")
    pq.write_table(table, path, row_group_size=1000)
    options = dict(prediction_columns={"score": "prediction"}, label_column="label", sample_size=1500, bins=10)
    single = build_profile_from_file(path, **options)

    # The recipe (docs/reference-profile.md): plan on the driver, pass 0 numbers the partitions'
    # rows, pass 1 maps partitions to builder states, the driver merges and freezes, pass 2 counts bins.
    plan = plan_columns(path, **options)
    df = spark.createDataFrame(table.to_pandas())   # partitions hold the rows in order

    def count_rows(batches):
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        yield pd.DataFrame({"partition": [pid], "rows": [sum(len(b) for b in batches)]})

    sizes = dict(df.mapInPandas(count_rows, "partition int, rows long").collect())
    assert len(sizes) >= 2   # the merge is exercised
    offsets = {pid: sum(sizes[p] for p in sizes if p < pid) for pid in sizes}

    def observe(batches):
        from pyspark import TaskContext

        state = observe_frames(plan, batches, row_offset=offsets[TaskContext.get().partitionId()])
        yield pd.DataFrame({"state": [pickle.dumps(state)]})

    merged = merge_states([pickle.loads(r.state) for r in df.mapInPandas(observe, "state binary").collect()])
    merged.freeze()
    assert merged.needs_second_pass   # 5000 rows, a sample of 1500
    edges = merged.bin_edges()

    def count_bins(batches):
        yield pd.DataFrame({"counts": [pickle.dumps(count_frames(plan, edges, batches))]})

    merged.add_bin_counts(merge_bin_counts(pickle.loads(r.counts)
                                           for r in df.mapInPandas(count_bins, "counts binary").collect()))
    assert_same_profile(merged.build(source="train"), single)
