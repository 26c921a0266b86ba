"""Shared building blocks for the document models."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from loomgit.wording import pattern

API_VERSION = "loomgit/v1"
ApiVersion = Literal["loomgit/v1"]

# Names that appear in templates (`steps.fetch`, `vars.shop_url`) must be identifiers.
IDENTIFIER = pattern(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "letters, digits and '_', not starting with a digit (it is used in templates)",
)
Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=64)]
# Workflow names are file names and URL segments.
NAME = pattern(
    r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$",
    "lowercase letters, digits, '-' and '_', at most 63, starting and ending with a letter"
    " or digit",
)
WorkflowName = Annotated[str, Field(pattern=NAME)]
ENV_NAME = pattern(
    r"^[a-z][a-z0-9-]{0,30}$",
    "lowercase letters, digits and '-', at most 31, starting with a letter",
)
EnvName = Annotated[str, Field(pattern=ENV_NAME)]


class StrictModel(BaseModel):
    """Immutable, and unknown keys are errors."""

    # Validators are built on first use: a command pays only for the documents it reads.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    def model_post_init(self, context: Any, /) -> None:
        # The names of the fields a document gave: one set shared by every instance given
        # the same names, not a set each. The daemon keeps about a dozen models per
        # workflow it serves, and these sets took 34 of its 222 MiB with 10,000 workflows.
        # Safe because the models are immutable: pydantic adds to this set only on
        # assignment (refused) and in `model_copy`, which copies it first.
        given = self.__pydantic_fields_set__
        shared = _FIELD_SETS.setdefault(frozenset(given), given)
        object.__setattr__(self, "__pydantic_fields_set__", shared)


_FIELD_SETS: dict[frozenset[str], set[str]] = {}


# Also the JSON Schema's pattern, for editors (ECMAScript reads it the same way).
DURATION_TEXT = pattern(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", "a duration such as '500ms', '30s', '5m' or '1h'"
)
_DURATION = re.compile(DURATION_TEXT)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT[match.group(2)]
        raise ValueError(f"'{value}' is not a duration; write e.g. '500ms', '30s', '5m' or '1h'")
    return value


Duration = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(gt=0, le=86400),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_TEXT},
            ],
            "description": "seconds, or a string such as '500ms', '30s', '5m', '1h'",
        }
    ),
]
