"""The DataFrames, read in bulk, equal cell by cell a straightforward reading of the store: a tuple
a row, as frames were built before (kept here as the reference), on random stores with retries,
failures, errors with any text, times of any size, multi partitions, several backfills, a live and
a dead owner."""

import functools
import random
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

import nb_backfill as nbb
from nb_backfill import frames
from nb_backfill.statuses import (
    BACKFILL_DONE,
    BackfillStatus,
    Event,
    PartitionStatus,
    RunStatus,
    StepStatus,
    partition_status_of,
)
from nb_backfill.storage import BackfillRecord, owner_alive, process_token, run_id_of

STEPS = ["extract", "load"]
ERRORS = [
    "ValueError: boom",
    "naïve ✗ — 😀 ünïcödé",
    "two\nlines\r\n\ttabbed",
    "nul \x00 inside",
    "",
    "x" * 5000,
]


def _time(rng: random.Random) -> float:
    """A time as an event may carry one: mostly now, some small, zero, negative, or years ahead."""
    return rng.choice(
        [
            time.time() + rng.random() * 1000,
            time.time() + rng.random() * 1000,
            rng.random() * 100,
            0.0,
            2.0**30,
            -rng.random() * 1e6,
            rng.uniform(2e9, 9e9),
            float(rng.randrange(1, 10**6)),
        ]
    )


def _events(rng: random.Random, run_id: str) -> list[Event]:
    """A random life for a run: started or not, steps, ended somehow, retried now and then."""
    events, attempt = [], 1
    while True:
        path = rng.choice(["queued", "run", "run", "run", "fail now", "cancel now", "canceling"])
        if path == "queued":
            return events
        if path == "fail now":
            events.append(Event(run_id, RunStatus.FAILURE, _time(rng), attempt, None, rng.choice(ERRORS)))
        elif path == "cancel now":
            events.append(Event(run_id, RunStatus.CANCELED, _time(rng), attempt, None, rng.choice([None, "canceled"])))
        else:
            events.append(Event(run_id, rng.choice([RunStatus.STARTING, RunStatus.STARTED]), _time(rng), attempt))
            events.append(Event(run_id, RunStatus.STARTED, _time(rng), attempt))
            for step in rng.sample([*STEPS, "renamed"], rng.randrange(4)):
                events.append(Event(run_id, StepStatus.RUNNING, _time(rng), attempt, step))
                done = rng.choice([StepStatus.SUCCESS, StepStatus.FAILURE, StepStatus.SKIPPED, None])
                if done is not None:
                    events.append(Event(run_id, done, _time(rng), attempt, step, rng.choice(ERRORS)))
            if path == "canceling":
                events.append(Event(run_id, RunStatus.CANCELING, _time(rng), attempt))
            end = rng.choice([RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED, None])
            if end is None:
                return events
            events.append(Event(run_id, end, _time(rng), attempt, None, rng.choice([None, *ERRORS])))
        if rng.random() < 0.6:
            return events
        attempt += 1
        events.append(Event(run_id, RunStatus.QUEUED, _time(rng), attempt))


def _every_step(run_id: str, steps: list[str], end: RunStatus) -> list[Event]:
    """Through every step, then `end`."""
    now = time.time()
    return [
        Event(run_id, RunStatus.STARTED, now + 1.5),
        *(Event(run_id, status, now + 2.25, 1, step) for step in steps for status in ("RUNNING", "SUCCESS")),
        Event(run_id, end, now + 3.125),
    ]


def _backfill(store, job, backfill_id, keys, status, owner, heartbeat, created, life):
    record = BackfillRecord(
        id=backfill_id,
        job_name=job.name,
        status=status,
        created=created,
        updated=created,
        ended=None,
        num_partitions=len(keys),
        options={},
        tags={},
        partitions_def=repr(job.partitions_def),
        owner=owner,
        heartbeat=heartbeat,
    )
    run_ids = [run_id_of(backfill_id, i) for i in range(len(keys))]
    store.create_backfill(record, zip(run_ids, keys, range(len(keys))))
    store.write_batch([e for run_id in run_ids for e in life(run_id)])


def random_store(tmp_path, seed):
    """A store with backfills of a static and a multi-partitioned job: of a random choice of keys
    (one with a key twice) with a live, a dead or no owner; an empty one; ones whose run ids sort
    among another's; the oldest of every key, in order."""
    rng = random.Random(seed)
    store = nbb.get_instance(tmp_path / f"store{seed}")
    static = nbb.StaticPartitionsDefinition([f"k{i:03d}-é" for i in range(40)])
    multi = nbb.MultiPartitionsDefinition(
        {"day": nbb.StaticPartitionsDefinition([f"d{i}" for i in range(6)]), "region": static}
    )
    jobs = [
        nbb.Job(f"flat{seed}", [nbb.step(lambda context: None, name=s) for s in STEPS], partitions_def=static),
        nbb.Job(f"multi{seed}", [nbb.step(lambda context: None, name=STEPS[0])], partitions_def=multi),
    ]
    now = time.time()
    owners = [
        (BackfillStatus.REQUESTED, process_token(), now),  # alive: this process
        (BackfillStatus.REQUESTED, process_token(), now - 3600),  # dead: no heartbeat for an hour
        (BackfillStatus.PAUSED, None, None),
        (BackfillStatus.COMPLETED_FAILED, None, None),
        (BackfillStatus.CANCELED, None, None),
    ]

    def random_life(run_id):
        return _events(rng, run_id)

    for job in jobs:
        keys = job.partitions_def.get_partition_keys()
        for i, (status, owner, heartbeat) in enumerate(rng.sample(owners, len(owners))):
            chosen = rng.sample(keys, rng.randrange(1, len(keys)))
            if i == 0:
                chosen.append(chosen[0])  # a key twice: its later run speaks
            _backfill(store, job, f"{job.name}-b{i}", chosen, status, owner, heartbeat, now + i, random_life)
        done = BackfillStatus.COMPLETED_FAILED
        _backfill(store, job, f"{job.name}-empty", [], done, None, None, now + 9, random_life)
        # run ids among theirs: their steps and past attempts are read by key range (a multi index of
        # nothing but run ids, for the empty one, cannot be made, as before)
        for inside in ("b0", "empty") if job.name.startswith("flat") else ("b0",):
            _backfill(store, job, f"{job.name}-{inside}-x", keys[:9], done, None, None, now + 8, random_life)
        # the oldest: every key in order, every run through every step (read without looking a key or
        # a run up), then canceled (it does not count: some keys are MISSING) or a success
        end = RunStatus.CANCELED if job.name.startswith("flat") else RunStatus.SUCCESS
        every_step = functools.partial(_every_step, steps=job.step_names, end=end)
        _backfill(
            store, job, f"{job.name}-all", keys, BackfillStatus.COMPLETED_SUCCESS, None, None, now - 1, every_step
        )
    return store, jobs


# --- the reference: frames as they were built before, a tuple a row
def reference_index(partitions, definition):
    if isinstance(definition, nbb.MultiPartitionsDefinition):
        names = definition.partition_dimension_names
        return pd.MultiIndex.from_tuples([tuple(str(p).split("|")) for p in partitions], names=names)
    return pd.Index(list(partitions), name="partition", dtype=object)


def _categories(enum):
    return [str(s) for s in enum]


def _times(values):
    return pd.to_datetime(values.astype("float64"), unit="s", utc=True)


def _run_rows(store, backfill_id):
    return store.query(
        "SELECT run_id, partition, status, attempt, start_time, end_time, error FROM runs WHERE backfill_id = ? "
        "ORDER BY seq",
        (backfill_id,),
    )


def reference_runs(store, backfill_id, definition):
    frame = pd.DataFrame(
        _run_rows(store, backfill_id),
        columns=["run_id", "partition", "status", "attempt", "start_time", "end_time", "error"],
    )
    frame["status"] = pd.Categorical(frame["status"], categories=_categories(RunStatus))
    frame["attempt"] = frame["attempt"].astype("int64")
    frame["start_time"] = _times(frame["start_time"])
    frame["end_time"] = _times(frame["end_time"])
    frame["duration"] = frame["end_time"] - frame["start_time"]
    frame.index = reference_index(frame["partition"].tolist(), definition)
    return frame[frames.RUN_COLUMNS]


def reference_attempts(store, backfill_id, definition):
    current = _run_rows(store, backfill_id)
    partition_of = {row[0]: row[1] for row in current}
    position = {row[0]: i for i, row in enumerate(current)}
    past = store.query(
        "SELECT run_id, attempt, status, start_time, end_time, error FROM attempts WHERE run_id > ? AND run_id < ?",
        (backfill_id + "-", backfill_id + "."),
    )
    attempts = past + [(r, a, s, t0, t1, e) for r, _p, s, a, t0, t1, e in current]
    attempts.sort(key=lambda row: (position.get(row[0], len(position)), row[1]))
    frame = pd.DataFrame(attempts, columns=["run_id", "attempt", "status", "start_time", "end_time", "error"])
    frame["status"] = pd.Categorical(frame["status"], categories=_categories(RunStatus))
    frame["attempt"] = frame["attempt"].astype("int64")
    frame["start_time"] = _times(frame["start_time"])
    frame["end_time"] = _times(frame["end_time"])
    frame["duration"] = frame["end_time"] - frame["start_time"]
    frame.index = reference_index([partition_of.get(r, r) for r in frame["run_id"]], definition)
    return frame[frames.ATTEMPT_COLUMNS]


def reference_steps(store, backfill_id, job):
    runs = _run_rows(store, backfill_id)
    position = {row[0]: i for i, row in enumerate(runs)}
    columns = {name: [StepStatus.PENDING.value] * len(runs) for name in job.step_names}
    for run_id, step, status in store.query(
        "SELECT run_id, step, status FROM steps WHERE run_id > ? AND run_id < ?", (backfill_id + "-", backfill_id + ".")
    ):
        if step in columns and run_id in position:
            columns[step][position[run_id]] = status
    frame = pd.DataFrame(
        {name: pd.Categorical(values, categories=_categories(StepStatus)) for name, values in columns.items()},
        index=reference_index([row[1] for row in runs], job.partitions_def),
    )
    frame.columns.name = "step"
    return frame


def reference_latest(store, job_name):
    owners = store.query("SELECT id, status, owner, heartbeat FROM backfills WHERE job_name = ?", (job_name,))
    alive = {b for b, status, owner, beat in owners if status not in BACKFILL_DONE and owner_alive(owner, beat)}
    latest = {}
    for partition, status, backfill_id in store.query(
        "SELECT runs.partition, runs.status, runs.backfill_id FROM backfills JOIN runs ON runs.backfill_id = backfills.id "
        "WHERE backfills.job_name = ? ORDER BY backfills.created, runs.seq",
        (job_name,),
    ):
        said = partition_status_of(status, backfill_id in alive)
        if said is not None:
            latest[partition] = said
    return latest


def reference_partition_status(store, job):
    keys = job.partitions_def.get_partition_keys()
    latest = reference_latest(store, job.name)
    return pd.DataFrame(
        {"status": pd.Categorical([latest.get(k, "MISSING") for k in keys], categories=_categories(PartitionStatus))},
        index=reference_index(keys, job.partitions_def),
    )


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal, and equal cell by cell in type and value (None is not NaN; every nanosecond counts)."""
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    assert list(actual.dtypes) == list(expected.dtypes)
    assert actual.index.dtype == expected.index.dtype and actual.index.names == expected.index.names
    assert [repr(x) for x in actual.index] == [repr(x) for x in expected.index]
    for name in expected.columns:
        assert [repr(x) for x in actual[name].tolist()] == [repr(x) for x in expected[name].tolist()], name


def assert_frames_as_before(store, jobs):
    for job in jobs:
        backfill_ids = [r.id for r in store.list_backfills(job.name)]
        for backfill_id in backfill_ids:
            bf = nbb.get_backfill(backfill_id, job=job, instance=store)
            assert_same(bf.runs_df(), reference_runs(store, backfill_id, job.partitions_def))
            assert_same(bf.attempts_df(), reference_attempts(store, backfill_id, job.partitions_def))
            assert_same(bf.steps_df(), reference_steps(store, backfill_id, job))
        assert_same(nbb.partition_status(job, instance=store), reference_partition_status(store, job))
        assert frames.latest_statuses(store, job) == reference_latest(store, job.name)


@pytest.mark.parametrize("seed", range(6))
def test_frames_equal_a_reading_a_row_at_a_time(tmp_path, seed):
    store, jobs = random_store(tmp_path, seed)
    counts = dict(store.query("SELECT status, COUNT(*) FROM runs GROUP BY status"))
    assert counts.get("FAILURE") and counts.get("QUEUED") and store.query("SELECT COUNT(*) FROM attempts")[0][0]
    assert_frames_as_before(store, jobs)


@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"), reason="Connection.setlimit is Python 3.11+")
def test_columns_longer_than_sqlite_makes_a_string_are_read_in_pieces(tmp_path):
    store, jobs = random_store(tmp_path, 7)
    store._connection().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)  # longer than any one value
    assert_frames_as_before(store, jobs)


def test_times_are_exact_to_the_last_bit(tmp_path):
    store = nbb.get_instance(tmp_path / "store")
    rng = np.random.default_rng(0)
    times = np.concatenate(
        [
            rng.uniform(1.0e9, 2.0e9, 200),  # now-ish: whole ticks
            rng.uniform(-1e6, 1e6, 50),  # before 2004: read as stored
            2.0 ** np.arange(-20, 33),  # the powers of two around the edge
            np.nextafter(2.0**30, [0, np.inf]),
            [0.0, -0.0, 5e-324, 9.2e9],
        ]
    )
    job = nbb.Job("exact", [nbb.step(lambda context: None, name="s")], nbb.StaticPartitionsDefinition(["a"]))
    record = BackfillRecord("bf", job.name, "COMPLETED_SUCCESS", 0.0, 0.0, None, len(times), {}, {}, "", None, None)
    store.create_backfill(record, [(run_id_of("bf", i), f"p{i}", i) for i in range(len(times))])
    store.write_batch([Event(run_id_of("bf", i), RunStatus.STARTED, float(t)) for i, t in enumerate(times)])
    stored = np.array([t for (t,) in store.query("SELECT start_time FROM runs ORDER BY seq")], np.float64)
    assert np.array_equal(stored, times)
    columns = store.run_columns("bf", ["start_time", "end_time"])
    assert columns["start_time"].tobytes() == stored.tobytes()  # every bit, the smallest subnormal's too
    assert np.isnan(columns["end_time"]).all()
