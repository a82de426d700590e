"""Requests-per-minute and tokens-per-minute limits as async token buckets.

A bucket refills continuously at ``per_minute / 60`` per second and holds at most ten seconds'
worth, so a run never bursts a whole minute's allowance at once (providers often enforce limits
over windows shorter than a minute).
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, per_minute: float, burst_seconds: float = 10.0):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` is available, then take it (an amount above the capacity is
        capped so that one huge request cannot wait forever)."""
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Correct an estimate after the fact (positive: more was used than taken)."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)
