"""`environment.yaml` (what an environment runs) and `variables.yaml` (its plain values)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from loomgit.models.base import ApiVersion, EnvName, Identifier, StrictModel, WorkflowName

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
CommitId = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]


class WorkflowState(StrictModel):
    """One workflow in one environment. In the first environment only `active` is used."""

    active: bool = False
    version: int | None = Field(default=None, ge=1)
    digest: Digest | None = None
    promoted_from: EnvName | None = None
    source_commit: CommitId | None = None
    promoted_by: str | None = None
    promoted_at: datetime | None = None
    notes: str | None = None
    rolled_back_from: int | None = Field(
        default=None, ge=1, description="set by rollback: the highest version it replaced"
    )


class EnvironmentState(StrictModel):
    """loomgit's record of an environment; written by loomgit, checked by CI."""

    api_version: ApiVersion = Field(alias="apiVersion")
    kind: Literal["Environment"]
    environment: EnvName | None = Field(
        default=None, description="the environment this file belongs to"
    )
    workflows: dict[WorkflowName, WorkflowState] = Field(default_factory=dict)


Scalar = str | int | float | bool | None


class Variables(StrictModel):
    """Plain per-environment values, used in templates as vars.<name>."""

    api_version: ApiVersion = Field(alias="apiVersion")
    kind: Literal["Variables"]
    variables: dict[Identifier, Scalar | list[Any] | dict[str, Any]] = Field(default_factory=dict)
