"""Glob sets of rule fields, compiled for fast matching (see the package docstring for the glob rules)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch.translate avoids catastrophic backtracking for several `*`s;
    # `[` is escaped so only `*` and `?` are special.
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


@dataclass(frozen=True)
class GlobSet:
    """A set of glob patterns compiled for fast membership tests."""

    patterns: tuple[str, ...]
    match_all: bool
    literals: frozenset[str]
    regexes: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> GlobSet:
        patterns = tuple(patterns)
        literals = frozenset(p for p in patterns if "*" not in p and "?" not in p)
        wild = tuple(_glob_regex(p) for p in patterns if p not in literals and p != "*")
        return cls(patterns, "*" in patterns, literals, wild)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, value: str) -> bool:
        if self.match_all or value in self.literals:
            return True
        return any(regex.match(value) for regex in self.regexes)

    def overlaps(self, other: GlobSet) -> bool:
        """Whether some value matches both; two globs other than ``*`` are taken to overlap."""
        if not self or not other:
            return False
        if self.match_all or other.match_all:
            return True
        if any(other.matches(v) for v in self.literals) or any(self.matches(v) for v in other.literals):
            return True
        return bool(self.regexes) and bool(other.regexes)

    def covers(self, other: GlobSet) -> bool:
        """Whether every value ``other`` matches matches here too (provable only for literals and ``*``)."""
        if self.match_all:
            return True
        return bool(other) and not other.match_all and not other.regexes and all(
            self.matches(v) for v in other.literals)


def _resource_patterns_overlap(one: str, other: str) -> bool:
    if one == "*" or other == "*":
        return True
    a, b = one.split("/", 1), other.split("/", 1)
    return len(a) == len(b) and all(GlobSet.of([x]).overlaps(GlobSet.of([y])) for x, y in zip(a, b))


@dataclass(frozen=True)
class ResourceSet:
    """Resource patterns: ``res`` (no subresource), ``res/sub``, or ``*`` (everything)."""

    patterns: tuple[str, ...]
    match_all: bool
    plain: GlobSet
    with_sub: tuple[tuple[GlobSet, GlobSet], ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> ResourceSet:
        patterns = tuple(patterns)
        plain = GlobSet.of(p for p in patterns if "/" not in p and p != "*")
        with_sub = tuple(
            (GlobSet.of([res]), GlobSet.of([sub]))
            for res, sub in (p.split("/", 1) for p in patterns if "/" in p)
        )
        return cls(patterns, "*" in patterns, plain, with_sub)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, resource: str, subresource: str) -> bool:
        if self.match_all:
            return True
        if not subresource:
            return self.plain.matches(resource)
        return any(res.matches(resource) and sub.matches(subresource) for res, sub in self.with_sub)

    def overlaps(self, other: ResourceSet) -> bool:
        """Whether some resource or subresource matches both (globs are taken to overlap)."""
        return any(_resource_patterns_overlap(a, b) for a in self.patterns for b in other.patterns)

    def covers(self, other: ResourceSet) -> bool:
        """Whether everything ``other`` matches matches here too (provable only for literals and ``*``)."""
        if self.match_all:
            return True
        def covered(pattern: str) -> bool:
            resource, _, subresource = pattern.partition("/")
            return "*" not in pattern and "?" not in pattern and self.matches(resource, subresource)

        return bool(other) and all(covered(pattern) for pattern in other.patterns)
