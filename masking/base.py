"""Exceptions and the audit report shared by every masker."""

from __future__ import annotations

from dataclasses import dataclass, field


class MaskingError(Exception):
    """A response that cannot be masked safely: the proxy answers 502 and sends none of it.

    Messages describe the shape of the problem only, never body content.
    """


class WriteRefused(Exception):
    """A write that would store the mask placeholder over real data: answer ``code`` (422)."""

    code = 422
    reason = "Invalid"


@dataclass
class MaskReport:
    """What was masked, for the audit record: kind -> count, never values."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
