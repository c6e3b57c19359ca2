"""Batch jobs on a local Ray cluster (Ray Data `map_batches` over actors): the output with 2 actors
and the output with 1 actor whose process is killed mid-job are both the local 1-worker output
byte for byte (so 1 and 2 actors agree, and each id is there exactly once), and a rerun writes
nothing. Each Ray run starts fresh actor processes (torch and transformers imported again), so
the module runs only these two jobs."""

from __future__ import annotations

import pytest
from batch_helpers import assert_each_id_once, generate_spec, kill_processes, write_dataset

from decodelab.batch import run_job

ray = pytest.importorskip("ray", reason='Ray is the optional extra decodelab[ray] (pip install -e ".[ray]"); '
                                        "CI installs it")
pytest.importorskip("ray.data", reason='Ray Data comes with the optional extra decodelab[ray]; CI installs it')

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU local Ray cluster, and the dataset with its output from one local worker."""
    folder = tmp_path_factory.mktemp("ray")
    expected = write_dataset(folder / "in.jsonl")
    run_job(generate_spec(), folder / "in.jsonl", folder / "reference.jsonl", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield folder / "in.jsonl", (folder / "reference.jsonl").read_bytes(), expected
    ray.shutdown()


def test_two_ray_actors_write_the_local_output_and_a_rerun_writes_nothing(cluster, tmp_path):
    source, reference, expected = cluster
    out = tmp_path / "out.jsonl"
    summary = run_job(generate_spec(), source, out, workers=2, ray="local", progress=False)
    assert summary.processed == len(expected) and summary.failed == 3
    assert out.read_bytes() == reference
    before = out.stat().st_mtime_ns
    again = run_job(generate_spec(), source, out, workers=2, ray="local", progress=False)
    assert (again.processed, again.already_done) == (0, len(expected))
    assert out.stat().st_mtime_ns == before and out.read_bytes() == reference


def test_one_ray_actor_killed_mid_job_loses_and_duplicates_nothing(cluster, tmp_path):
    source, reference, expected = cluster
    out = tmp_path / "out.jsonl"
    killed: list[int] = []
    seen: list[dict] = []

    def kill_actors_once(record):
        seen.append(record)
        if not killed:
            killed.extend(kill_processes("RowWorker"))
            assert len(seen) < len(expected)  # mid-job

    summary = run_job(generate_spec(), source, out, workers=1, ray="local", progress=False, on_record=kill_actors_once)
    assert killed, "no Ray actor process was found to kill"
    assert summary.processed == len(expected)
    assert_each_id_once(out, expected)
    assert out.read_bytes() == reference
