"""Following a store's change feed: one thread per process and store hands every subscriber what
changed, at most every FEED_SECONDS.

Whatever made the change (this kernel, another kernel, a terminal, a process that died and the one
that took over) is in the feed, so a face that follows it shows all of it. Subscribers are held
weakly: a widget that is gone stops being called, and the thread ends when nobody follows.
"""

from __future__ import annotations

import threading
import time
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .storage import Change, OnePerStore, Storage, StorageError

FEED_SECONDS = 0.15
Subscriber = Callable[[Sequence[Change]], bool | None]  # returns False to stop following


class _Subscription:
    def __init__(self, callback: Subscriber, after: int):
        self.after = after
        # a bound method is held weakly (its object, a widget, may go); any other callable strongly
        self._ref: Any = weakref.WeakMethod(callback) if isinstance(callback, types.MethodType) else (lambda: callback)

    def callback(self) -> Subscriber | None:
        return self._ref()


class Feed(OnePerStore):
    """The change feed of one store, followed by one thread of this process."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._subscriptions: list[_Subscription] = []
        # reentrant: a widget collected while this thread holds the lock unsubscribes in its __del__
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Subscriber, after: int) -> Callable[[], None]:
        """Call `callback(changes)` with every change after sequence number `after`, then at
        every tick (with the new changes, possibly none); returns a function that unsubscribes."""
        subscription = _Subscription(callback, after)
        with self._lock:
            self._subscriptions.append(subscription)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._follow, name="nb_backfill-feed", daemon=True)
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if subscription in self._subscriptions:
                    self._subscriptions.remove(subscription)

        return unsubscribe

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _follow(self) -> None:
        while True:
            started = time.monotonic()
            with self._lock:
                subscriptions = list(self._subscriptions)
                if not subscriptions:
                    self._thread = None
                    return
            after = min(s.after for s in subscriptions)
            try:
                changes = self.storage.changes(after)
            except StorageError:
                changes = []  # the store is unreadable for now: the next tick tries again
            for subscription in subscriptions:
                if not self._deliver(subscription, changes):
                    with self._lock:
                        if subscription in self._subscriptions:
                            self._subscriptions.remove(subscription)
            del subscriptions  # hold nothing while asleep
            if len(changes) < 100_000:  # else more is waiting: read it at once
                time.sleep(max(0.0, FEED_SECONDS - (time.monotonic() - started)))

    @staticmethod
    def _deliver(subscription: _Subscription, changes: Sequence[Change]) -> bool:
        """Hand a subscriber its changes; False when it is gone or wants no more. The callback is
        held only during the call (in a frame of its own), so the feed never keeps a subscriber alive."""
        callback = subscription.callback()
        if callback is None:
            return False
        mine = [c for c in changes if c.seq > subscription.after]
        if mine:
            subscription.after = mine[-1].seq
        try:
            return callback(mine) is not False
        except Exception:  # a broken subscriber (a closed comm) must not stop the others
            return False
