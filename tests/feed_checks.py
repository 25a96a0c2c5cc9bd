"""Checks of the change feed shared by the lifecycle tests: what it holds for a run, and whether
the lifecycle allows each entry to follow the one before it."""

from nb_backfill.statuses import BACKFILL_DONE, RunStatus, run_change_allowed


def feed_by_run(store, backfill_id):
    """Each run's (status, attempt) in each entry the change feed holds for it, oldest first."""
    entries = {}
    for change in store.changes(0, backfill_id):
        if change.run_id is not None and change.step is None:
            entries.setdefault(change.run_id, []).append((change.status, change.attempt))
    return entries


def reachable(state, target):
    """Whether the lifecycle leads from `state` to `target` (status, attempt) in zero or more
    changes (an entry may repeat its run's state: its steps changed)."""
    if state == target:
        return True
    seen, todo = {state}, [state]
    while todo:
        status, attempt = todo.pop()
        for new in [(s.value, attempt) for s in RunStatus] + [(RunStatus.QUEUED.value, attempt + 1)]:
            if new[1] > target[1]:  # attempts only grow: none past the target's can lead to it
                continue
            if new not in seen and run_change_allowed(status, attempt, *new):
                if new == target:
                    return True
                seen.add(new)
                todo.append(new)
    return False


def assert_feed_is_a_valid_lifecycle(store, backfill_id):
    """While a backfill runs, every run's feed entries follow the lifecycle and end where the store
    says the run is; once it has ended, its runs' entries have left the feed. A backfill that ended
    and was reopened (retry, resume) lost its runs' earlier entries: theirs start anywhere."""
    ended = store.get_backfill(backfill_id).status in BACKFILL_DONE
    done = "','".join(BACKFILL_DONE)
    ended_before = store.query(
        f"SELECT 1 FROM events WHERE backfill_id = ? AND run_id IS NULL AND status IN ('{done}')", (backfill_id,)
    )
    feed = feed_by_run(store, backfill_id)
    for run in store.runs(backfill_id):
        entries = feed.get(run.run_id, [])
        if ended:
            assert entries == [], f"{run.run_id}: entries of an ended backfill stayed in the feed"
            continue
        state = (RunStatus.QUEUED.value, 1)
        if ended_before:
            state = entries[0] if entries else (run.status, run.attempt)
        for entry in entries:
            assert reachable(state, entry), f"{run.run_id}: {state} -> {entry} in the feed"
            state = entry
        assert state == (run.status, run.attempt), (
            f"{run.run_id}: the feed ends at {state}, the store says {(run.status, run.attempt)}: {entries}"
        )
