"""The background thread that polls for new versions."""
from __future__ import annotations

import logging
import threading
from typing import Callable

logger = logging.getLogger(__name__)


class PollingThread:
    """Calls `poll` every `interval` seconds until stopped. An exception in `poll` is logged, never
    raised: a failed poll must not take the host down."""

    def __init__(self, interval: float, poll: Callable[[], None], name: str = "processor-updater"):
        self.interval = interval
        self._poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Asks the thread to stop and waits up to `timeout` s; False if a load is still running (it will
        find the processor closed and discard its result)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - the thread must survive anything a poll does
                logger.exception("model update poll failed")
