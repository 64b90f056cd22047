"""Agent budgets: what a rule lets each agent spend, checked and compiled (no Django, no IO).

A rule's ``budget`` (RuleSet key ``budget``, model field ``Rule.budget``) applies to the requests
that rule decides, per agent (issuer and subject) and connection::

    budget:
      rate: 5/second        # at most 5 requests a second
      quota: 10/hour        # at most 10 in any hour (a moving window: the oldest frees the next)
      concurrent: 3         # at most 3 at once (exec, attach, port-forward, watch sessions)
      loop: 5/minute        # the same refused or failing request at most 5 times a minute, or "off"

``rate`` and ``quota`` are the same kind of limit, "N/unit" or "N per M units" (second, minute,
hour, day: the ``limits`` library's notation, which counts them); they are two keys so a rule
can say both, and the refusal names the one that ran out.  ``loop`` overrides the gateway-wide
``AIRLOCK_BUDGET_LOOP`` for the requests this rule decides.  The gateway stage that spends them is
gateway.budgets; the counters, shared by every gateway process through Redis, are
gateway.budgetstore's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

BUDGET_KEYS = ("rate", "quota", "concurrent", "loop")
OFF = "off"
MAX_AMOUNT = 1_000_000
MAX_CONCURRENT = 1000
MAX_WINDOW_SECONDS = 31 * 86400
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_WINDOW = re.compile(r"\s*([0-9]{1,7})\s*(?:/|\s+per\s+)\s*(?:([0-9]{1,7})\s*)?([a-z]+?)s?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    """At most ``amount`` within any ``seconds``; ``text`` as the rule wrote it, normalised."""

    amount: int
    seconds: int

    @property
    def text(self) -> str:
        return f"{self.amount} per {duration(self.seconds)}"


@dataclass(frozen=True)
class Budget:
    """A rule's compiled budget; every part optional.  ``loop_off``: the rule turns loop detection off."""

    rate: Window | None = None
    quota: Window | None = None
    concurrent: int | None = None
    loop: Window | None = None
    loop_off: bool = False

    def windows(self) -> tuple[tuple[str, Window], ...]:
        """The counted windows, longest first: a quota that ran out is named before a rate."""
        found = [(kind, w) for kind, w in (("quota", self.quota), ("rate", self.rate)) if w is not None]
        return tuple(sorted(found, key=lambda item: -item[1].seconds))

    @property
    def spends(self) -> bool:
        """Whether a request under this budget is counted (rate, quota or a concurrency slot)."""
        return self.rate is not None or self.quota is not None or self.concurrent is not None


NO_BUDGET = Budget()


def parse_window(text) -> Window:
    """``"10/hour"``, ``"10 per hour"``, ``"5 per 30 seconds"`` -> Window; ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError('must be a string like "10/hour" or "5 per 30 seconds"')
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError(f'{text[:40]!r} is not a limit like "10/hour" or "5 per 30 seconds"')
    amount, multiple, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}: use second, minute, hour or day")
    if not 1 <= amount <= MAX_AMOUNT:
        raise ValueError(f"the count must be between 1 and {MAX_AMOUNT}")
    seconds = multiple * _UNITS[unit]
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError("the window must be between 1 second and 31 days")
    return Window(amount, seconds)


def check_budget(value) -> list[str]:
    """What is wrong with a rule's budget (empty: nothing)."""
    if value in (None, {}):
        return []
    if not isinstance(value, Mapping):
        return ["must be a mapping with rate, quota, concurrent and/or loop"]
    errors = [f"unknown key {str(key)[:40]!r}: use {', '.join(BUDGET_KEYS)}" for key in value if key not in BUDGET_KEYS]
    for key in ("rate", "quota"):
        if key in value:
            try:
                parse_window(value[key])
            except ValueError as exc:
                errors.append(f"{key}: {exc}")
    if "loop" in value and value["loop"] != OFF:
        try:
            if parse_window(value["loop"]).amount < 2:
                errors.append("loop: a loop is the same request at least 2 times")
        except ValueError as exc:
            errors.append(f"loop: {exc} (or off)")
    if "concurrent" in value:
        count = value["concurrent"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CONCURRENT:
            errors.append(f"concurrent: must be an integer between 1 and {MAX_CONCURRENT}")
    return errors


def compile_budget(value) -> Budget:
    """The Budget of a checked ``value`` (``check_budget`` found nothing wrong)."""
    if not value:
        return NO_BUDGET
    loop = value.get("loop")
    return Budget(
        rate=parse_window(value["rate"]) if "rate" in value else None,
        quota=parse_window(value["quota"]) if "quota" in value else None,
        concurrent=value.get("concurrent"),
        loop=parse_window(loop) if loop not in (None, OFF) else None,
        loop_off=loop == OFF,
    )


def loop_setting(text: str) -> Window | None:
    """AIRLOCK_BUDGET_LOOP: a window (at least 2 repeats), or None for "off" or empty."""
    if not text or text.strip().lower() == OFF:
        return None
    window = parse_window(text)
    if window.amount < 2:
        raise ValueError("a loop is the same request at least 2 times")
    return window


def duration(seconds: float) -> str:
    """``3600`` -> ``1 hour``; ``90`` -> ``1 min 30 s``; ``42`` -> ``42 s``."""
    seconds = max(0, int(round(seconds)))
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    return f"{seconds} s"
