"""The feed: every message a broker receives handed to ``on_message`` on one dispatcher thread, in arrival order
(:class:`Dispatcher`), the feed's connection state (:class:`FeedState`); mosquitto's paho feed client is in
:mod:`~iotpipe.local.broker.mosquitto`, amqtt's feed plugin in :mod:`~iotpipe.local.broker.amqtt`."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from iotpipe.local.broker.base import OnFeedLost, OnMessage

_log = logging.getLogger(__name__)

_STOP = object()


class Dispatcher:
    """One thread calling ``on_message`` in the order messages arrived.

    The queue is bounded: past ``maxsize`` waiting messages the producer (paho's thread, or amqtt's event loop)
    waits, which pushes back on the broker, until ``stop`` begins. Each counter has a single writer thread (the
    one producer, or the dispatcher), so none needs a lock; a C ``SimpleQueue`` keeps the hand-over cheap.
    """

    def __init__(self, on_message: OnMessage, maxsize: int) -> None:
        self._on_message = on_message
        self._maxsize = maxsize
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._received = self._done = self._forwarded = self._errors = self._high_water = 0
        self._last_error: str | None = None
        self.closing = False
        self._thread = threading.Thread(target=self._run, name="iotpipe-broker-feed", daemon=True)
        self._thread.start()

    def put(self, topic: str, payload: bytes, client_id: str | None) -> None:
        """Queue one message; called from one producer thread only."""
        depth = self._received - self._done
        while depth >= self._maxsize and not self.closing and self._thread.is_alive():
            time.sleep(0.001)
            depth = self._received - self._done
        self._queue.put((topic, payload, client_id))
        self._received += 1
        if depth + 1 > self._high_water:
            self._high_water = depth + 1

    def depth(self) -> int:
        """Messages waiting for ``on_message``."""
        return max(self._received - self._done, 0)

    def counters(self) -> tuple[int, int, int, str | None, int]:
        """received, forwarded, callback errors, last callback error, queue high water."""
        return self._received, self._forwarded, self._errors, self._last_error, self._high_water

    def close(self, timeout_s: float) -> None:
        """Let the thread finish what is queued, up to ``timeout_s``; it is a daemon if it cannot."""
        self.closing = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            topic, payload, client_id = item
            try:
                self._on_message(topic, payload, client_id)
            except Exception as exc:  # the consumer's bug must not stop the feed; it is counted and logged
                _log.exception("on_message failed for a message on %s", topic)
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            else:
                self._forwarded += 1
            finally:
                self._done += 1


class FeedState:
    """Whether the feed is connected, how often it was lost, and who to tell."""

    def __init__(self, on_feed_lost: OnFeedLost | None) -> None:
        self._on_feed_lost = on_feed_lost
        self._lock = threading.Lock()
        self.connected = False
        self.disconnects = 0
        self.last_error: str | None = None
        self.closing = False

    def up(self) -> None:
        """The feed is connected and subscribed."""
        with self._lock:
            self.connected = True

    def lost(self, reason: str) -> None:
        """The feed lost the broker; counted and reported unless the broker is being stopped."""
        with self._lock:
            was_connected, self.connected = self.connected, False
            if self.closing or not was_connected:
                return
            self.disconnects += 1
            self.last_error = reason
        _log.warning("MQTT broker feed lost: %s", reason)
        if self._on_feed_lost is not None:
            try:
                self._on_feed_lost(reason)
            except Exception:
                _log.exception("on_feed_lost failed")

    def snapshot(self) -> tuple[bool, int, str | None]:
        """connected, disconnects, last error."""
        with self._lock:
            return self.connected, self.disconnects, self.last_error
