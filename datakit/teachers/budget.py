"""A spending cap that holds: ``--max-cost`` / ``max_cost`` (per run and per teacher).

What is capped is everything paid for on one run directory, every command and every session
together: each paid answer is written to the run's response cache with its cost and teacher,
so a rerun starts from what earlier sessions spent (:meth:`ResponseCache.spent`).

Before a request is sent, the pool reserves its worst case: prompt tokens bounded by the
request's UTF-8 bytes (no tokenizer makes more tokens than bytes, chat-template tokens are
covered by a margin) plus ``max_tokens``, at the teacher's price. A request whose worst case
does not fit next to what is spent and reserved waits while requests in flight settle (their
actual cost is usually far below their reservation); when it still does not fit with nothing
in flight that could free room, the budget *closes*: that request and every later one are
refused, what is in flight finishes, and the command commits and stops (exit 1). So the spend
never passes the cap unless a provider bills more than the reserved worst case.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

TEMPLATE_MARGIN = 16          # tokens a chat template may add around the messages
DEFAULT_COMPLETION = 4096     # the worst case of a request that sets no max_tokens


def worst_prompt_tokens(request: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens of a chat request (its bytes, plus a margin)."""
    text = json.dumps(request.get("messages") or [], ensure_ascii=False)
    fmt = json.dumps(request.get("response_format") or "", ensure_ascii=False)
    return len(text.encode("utf-8")) + len(fmt.encode("utf-8")) + TEMPLATE_MARGIN


def worst_case_cost(request: dict[str, Any], price_input: float, price_output: float) -> float:
    """USD a request can cost at most: :func:`worst_prompt_tokens` plus ``max_tokens``."""
    completion = request.get("max_tokens") or request.get("max_completion_tokens") or DEFAULT_COMPLETION
    return (worst_prompt_tokens(request) * price_input + completion * price_output) / 1e6


class Budget:
    """Reservations and spend against a run cap and per-teacher caps (USD)."""

    def __init__(self, run_limit: float | None, teacher_limits: dict[str, float | None],
                 spent: dict[str, float] | None = None):
        self.run_limit = run_limit
        self.teacher_limits = {k: v for k, v in teacher_limits.items() if v is not None}
        self.spent: dict[str, float] = dict(spent or {})          # all sessions, per teacher
        self.reserved: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}   # reservations not yet settled, per teacher
        self.closed: dict[str, str] = {}   # teacher name ("*": all) -> why it is closed
        self.refused = 0                   # requests not sent because of the budget
        self._event: asyncio.Event | None = None

    # ------------------------------------------------------------------ state
    def total_spent(self) -> float:
        return sum(self.spent.values())

    def _over(self, teacher: str, amount: float) -> str | None:
        """Which cap ``amount`` more would break: "*" (the run's), the teacher's name, or None."""
        eps = 1e-12
        if self.run_limit is not None and \
                self.total_spent() + sum(self.reserved.values()) + amount > self.run_limit + eps:
            return "*"
        lim = self.teacher_limits.get(teacher)
        if lim is not None and self.spent.get(teacher, 0.0) + self.reserved.get(teacher, 0.0) + amount > lim + eps:
            return teacher
        return None

    def _is_closed(self, teacher: str) -> bool:
        return "*" in self.closed or teacher in self.closed

    def _close(self, which: str, teacher: str, amount: float) -> None:
        if which == "*":
            spent, limit, what = self.total_spent(), self.run_limit, "the run's budget (max_cost)"
        else:
            spent, limit, what = self.spent.get(teacher, 0.0), self.teacher_limits[teacher], \
                f"teacher '{teacher}''s budget (max_cost)"
        self.closed.setdefault(which, f"budget reached: spent ${spent:.4f} of {what} ${limit:.4f} on this run; "
                                      f"the next request could cost up to ${amount:.4f}. "
                                      f"Rerun with a higher --max-cost to continue")

    def stop_message(self) -> str | None:
        """The line a command prints when the budget stopped it (None: it did not)."""
        if not self.closed:
            return None
        return self.closed.get("*") or next(iter(self.closed.values()))

    # ------------------------------------------------------------------ reservations
    async def reserve(self, teacher: str, amount: float) -> bool:
        """Reserve ``amount`` for one request; False (refused) when the budget is closed."""
        while True:
            if self._is_closed(teacher):
                self.refused += 1
                return False
            which = self._over(teacher, amount)
            if which is None:
                self._hold(teacher, amount)
                return True
            in_flight = sum(self.in_flight.values()) if which == "*" else self.in_flight.get(teacher, 0)
            if not in_flight:
                self._close(which, teacher, amount)
                continue
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()   # a request in flight settles, maybe freeing room

    def try_reserve(self, teacher: str, amount: float) -> bool:
        """Reserve without waiting (a batch line): False, and the budget closes, when it does not fit."""
        if self._is_closed(teacher):
            self.refused += 1
            return False
        which = self._over(teacher, amount)
        if which is not None:
            self._close(which, teacher, amount)
            self.refused += 1
            return False
        self._hold(teacher, amount)
        return True

    def force_reserve(self, teacher: str, amount: float, count: int = 1) -> None:
        """Account for ``count`` requests already submitted (a batch resumed after a restart)."""
        self._hold(teacher, amount, count)

    def _hold(self, teacher: str, amount: float, count: int = 1) -> None:
        self.reserved[teacher] = self.reserved.get(teacher, 0.0) + amount
        self.in_flight[teacher] = self.in_flight.get(teacher, 0) + count

    def settle(self, teacher: str, reserved: float, actual: float, count: int = 1) -> None:
        """``count`` requests finished: drop their reservation, add what they cost."""
        self.in_flight[teacher] = self.in_flight.get(teacher, 0) - count
        left = self.reserved.get(teacher, 0.0) - reserved
        self.reserved[teacher] = left if self.in_flight[teacher] > 0 else 0.0  # no float dust
        self.spent[teacher] = self.spent.get(teacher, 0.0) + actual
        if self._event is not None:
            self._event.set()
            self._event = None


def budget_for(cfg: Any, teachers: list[Any], spent: Callable[[], dict[str, float]]) -> Budget | None:
    """The budget of a command from the config (None when no cap is set); ``spent`` gives what
    earlier sessions paid, per teacher."""
    limits = {t.name: t.cfg.max_cost for t in teachers}
    if cfg.max_cost is None and not any(v is not None for v in limits.values()):
        return None
    return Budget(cfg.max_cost, limits, spent())
