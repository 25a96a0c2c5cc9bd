"""Jobs and steps: definitions are checked when made; a run executes steps in dependency order."""

import threading

import pytest

import nb_backfill as nbb
from nb_backfill.executors.run import RUN_LOGGER, RunRequest, execute_run, install_capture

DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-01-10")


def run(job, key="2024-01-02", **request):
    events = []
    status = execute_run(job, RunRequest("r1", key, **request), events.append, threading.Event())
    return status, events


def test_one_step_job_from_a_function():
    @nbb.job(partitions_def=DAILY, tags={"team": "data"})
    def daily_sales(context):
        """Sum the day's sales."""
        return context.partition_key

    assert isinstance(daily_sales, nbb.Job)
    assert daily_sales.name == "daily_sales" and daily_sales.step_names == ["daily_sales"]
    assert daily_sales.tags == {"team": "data"} and daily_sales.description == "Sum the day's sales."
    status, events = run(daily_sales)
    assert status == "SUCCESS"
    assert [(e.step, e.status) for e in events] == [
        (None, "STARTED"),
        ("daily_sales", "RUNNING"),
        ("daily_sales", "SUCCESS"),
        (None, "SUCCESS"),
    ]


def test_steps_run_in_dependency_order_and_pass_outputs():
    seen = []

    @nbb.step
    def extract(context):
        seen.append("extract")
        return [1, 2, 3]

    @nbb.step
    def transform(extract):
        seen.append("transform")
        return [x * 10 for x in extract]

    @nbb.step
    def load(transform, extract, context):
        seen.append("load")
        context.log.info("loading %d rows", len(transform))
        return sum(transform) + sum(extract)

    etl = nbb.Job("etl", steps=[load, transform, extract], partitions_def=DAILY)
    assert etl.step_names == ["extract", "transform", "load"]
    status, _ = run(etl)
    assert status == "SUCCESS" and seen == ["extract", "transform", "load"]


def test_failed_step_skips_downstream_and_fails_the_run():
    @nbb.step
    def a():
        raise ValueError("no data for this day")

    @nbb.step
    def b(a):
        return a

    @nbb.step
    def c():
        return 1

    status, events = run(nbb.Job("fails", steps=[a, b, c], partitions_def=DAILY))
    assert status == "FAILURE"
    by_step = {e.step: e for e in events if e.step and e.status != "RUNNING"}
    assert by_step["a"].status == "FAILURE" and "ValueError: no data for this day" in by_step["a"].message
    assert by_step["b"].status == "SKIPPED" and "'a' failed" in by_step["b"].message
    # c does not depend on a but comes after it in order: a failed run stops there
    assert by_step["c"].status == "SKIPPED"
    assert "step 'a' failed" in events[-1].message and "Traceback" in events[-1].message


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: nbb.Job(
                "j",
                steps=[nbb.step(lambda context: 1, name="a"), nbb.step(lambda missing: 1, name="b")],
                partitions_def=DAILY,
            ),
            ["'b'", "'missing'", "not a step"],
        ),
        (
            lambda: nbb.Job(
                "j", steps=[nbb.step(lambda b: 1, name="a"), nbb.step(lambda a: 1, name="b")], partitions_def=DAILY
            ),
            ["cycle", "a -> b -> a"],
        ),
        (
            lambda: nbb.Job(
                "j", steps=[nbb.step(lambda: 1, name="a"), nbb.step(lambda: 2, name="a")], partitions_def=DAILY
            ),
            ["unique", "'a'"],
        ),
        (lambda: nbb.Job("j", steps=[42], partitions_def=DAILY), ["must be a function", "42"]),
        (lambda: nbb.Job("j", steps=[], partitions_def=DAILY), ["non-empty list"]),
        (lambda: nbb.Job("j", steps=[lambda: 1], partitions_def="daily"), ["partitions_def", "'daily'"]),
        (lambda: nbb.job(partitions_def=DAILY)("not callable"), ["must be a function", "'not callable'"]),
        (lambda: nbb.job(partitions_def=DAILY, name="x", retries=-1)(lambda context: 1), ["max_retries", "-1"]),
        (lambda: nbb.job(partitions_def=DAILY, name="x", tags={"a": 1})(lambda context: 1), ["tags", "'a': 1"]),
        (lambda: nbb.job(partitions_def=DAILY)(lambda context: 1), ["name", "'<lambda>'"]),
        (lambda: nbb.RetryPolicy(backoff="fast"), ["'linear'", "'exponential'", "'fast'"]),
    ],
)
def test_bad_jobs_are_refused_when_defined(make, words):
    with pytest.raises(nbb.DefinitionError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_context_has_what_a_step_needs():
    multi = nbb.MultiPartitionsDefinition({"date": DAILY, "region": nbb.StaticPartitionsDefinition(["eu", "us"])})
    seen = {}

    @nbb.job(partitions_def=multi)
    def inspect(context):
        seen.update(
            key=context.partition_key,
            window=context.partition_time_window,
            dims=context.partition_keys_by_dimension,
            run_id=context.run_id,
            backfill_id=context.backfill_id,
            attempt=context.attempt,
            tags=context.tags,
            log=context.log,
            canceled=context.is_canceled,
        )

    status, _ = run(inspect, "2024-01-03|eu", attempt=2, backfill_id="bf", tags={"k": "v"})
    assert status == "SUCCESS"
    assert seen["key"] == "2024-01-03|eu" and seen["dims"] == {"date": "2024-01-03", "region": "eu"}
    assert seen["window"].start.isoformat() == "2024-01-03T00:00:00+00:00"
    assert (seen["run_id"], seen["backfill_id"], seen["attempt"], seen["tags"]) == ("r1", "bf", 2, {"k": "v"})
    assert seen["log"] is RUN_LOGGER and seen["canceled"] is False


def test_static_job_has_no_time_window():
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a"]))
    def no_window(context):
        return context.partition_time_window

    status, events = run(no_window, "a")
    assert status == "FAILURE" and "not partitioned by time" in events[-1].message


def test_step_retries_are_attempts():
    calls = []

    @nbb.step(retries=nbb.RetryPolicy(max_retries=2, delay=0.01, backoff="exponential"))
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("try again")

    status, events = run(nbb.Job("flaky", steps=[flaky], partitions_def=DAILY))
    assert status == "SUCCESS" and len(calls) == 3
    assert [(e.status, e.step_attempt) for e in events if e.step] == [
        ("RUNNING", 1),
        ("FAILURE", 1),
        ("RUNNING", 2),
        ("FAILURE", 2),
        ("RUNNING", 3),
        ("SUCCESS", 3),
    ]


def test_backoff_waits():
    assert nbb.RetryPolicy(3, delay=1.0, backoff="linear").wait_before(3) == 2.0
    assert nbb.RetryPolicy(3, delay=1.0, backoff="exponential").wait_before(4) == 4.0


def test_cancellation_check_stops_the_run():
    canceled = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def long(context):
        canceled.set()
        context.check_canceled()

    events = []
    status = execute_run(long, RunRequest("r", "2024-01-02"), events.append, canceled)
    assert status == "CANCELED"
    assert events[-1].status == "CANCELED"


def test_output_is_captured_per_run():
    @nbb.job(partitions_def=DAILY)
    def chatty(context):
        import logging
        import sys

        print("to stdout")
        print("to stderr", file=sys.stderr)
        context.log.warning("a warning")
        logging.getLogger("user.code").error("user logger")

    install_capture()
    status, events = run(chatty)
    text = "".join(e.message for e in events if e.status == "LOG")
    assert status == "SUCCESS"
    for piece in ("to stdout", "to stderr", "WARNING nb_backfill.run - a warning", "ERROR user.code - user logger"):
        assert piece in text
