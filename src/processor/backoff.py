"""Exponential backoff: the one rule for everything Processor retries (versions and deltas that failed
to load, downloads that failed)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Union


def exponential_delay(base: float, attempt: int, cap: float = math.inf) -> float:
    """The wait before retry number `attempt` (1, 2, ...): base doubling each time, at most cap."""
    return min(base * 2 ** (attempt - 1), cap)


@dataclass
class _Failure:
    count: int
    retry_at: float  # time.monotonic()


class RetryBackoff:
    """When work that failed (by identity: a version, a delta) may be tried again. `base` (seconds, or a
    function giving them) doubles with each failure of the same identity, up to `cap`."""

    def __init__(self, base: Union[float, Callable[[], float]], cap: float):
        self._base = base if callable(base) else (lambda: base)
        self._cap = cap
        self._failures: Dict[Hashable, _Failure] = {}

    def failed(self, identity: Hashable) -> float:
        """Records a failure; returns how long until the identity may be retried."""
        previous = self._failures.get(identity)
        count = previous.count + 1 if previous else 1
        delay = exponential_delay(self._base(), count, self._cap)
        self._failures[identity] = _Failure(count, time.monotonic() + delay)
        return delay

    def succeeded(self, identity: Hashable) -> None:
        self._failures.pop(identity, None)

    def waiting(self, identity: Hashable) -> bool:
        """Whether the identity failed and its retry time has not come yet."""
        failure = self._failures.get(identity)
        return bool(failure and time.monotonic() < failure.retry_at)

    def clear(self) -> None:
        self._failures.clear()
