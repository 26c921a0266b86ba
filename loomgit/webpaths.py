"""Webhook paths with parameters: a segment `:name` takes any value, which the workflow
reads as `trigger.params.name` (n8n's `users/:id`).

A request is matched against the literal paths first (one dictionary lookup, the daemon's
hot path), then against the paths with parameters of its method, the most literal first:
comparing segment by segment from the left, a literal segment wins over a parameter. So
`users/me` wins over `users/:id`, and `users/:id` over `:kind/42` for `users/42`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")


def parametric(route: str) -> bool:
    """Whether `route` has a `:name` segment (a literal segment holds no ':')."""
    return ":" in route


def shape(route: str) -> str:
    """What two routes that serve the same requests share: `users/:id` and `users/:name`
    are both `users/:`."""
    if not parametric(route):
        return route
    return "/".join(":" if seg.startswith(":") else seg for seg in route.split("/"))


@dataclass(frozen=True)
class Pattern(Generic[T]):
    """A route with parameters, and what it leads to (its trigger)."""

    route: str
    segments: tuple[str | None, ...]  # None where a parameter stands
    names: tuple[str, ...]
    target: T

    @classmethod
    def of(cls, route: str, target: T) -> Pattern[T]:
        parts = route.split("/")
        segments = tuple(None if seg.startswith(":") else seg for seg in parts)
        return cls(route, segments, tuple(seg[1:] for seg in parts if seg.startswith(":")), target)

    def rank(self) -> tuple[int, ...]:
        return tuple(0 if seg is not None else 1 for seg in self.segments)

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """The parameters' values when `parts` (a request path's segments) match."""
        if len(parts) != len(self.segments):
            return None
        values = []
        for seg, part in zip(self.segments, parts, strict=True):
            if seg is None:
                if not part:
                    return None
                values.append(part)
            elif seg != part:
                return None
        return dict(zip(self.names, values, strict=True))


def ordered(patterns: Iterable[Pattern[T]]) -> tuple[Pattern[T], ...]:
    """The order in which requests are matched: the most literal first."""
    return tuple(sorted(patterns, key=Pattern.rank))


def segments(raw_path: str) -> list[str]:
    """A request path's segments, each percent-decoded on its own: `a%2Fb` is one
    segment, `a/b`."""
    return [unquote(part) for part in raw_path.strip("/").split("/")]


def match(
    patterns: Sequence[Pattern[T]], parts: Sequence[str]
) -> tuple[Pattern[T], dict[str, str]] | None:
    """The first of `patterns` (as `ordered` gives them) that the request path's
    `segments` match, and the values of its parameters."""
    for pattern in patterns:
        params = pattern.match(parts)
        if params is not None:
            return pattern, params
    return None
