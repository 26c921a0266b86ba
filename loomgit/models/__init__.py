"""Pure document models: no I/O; unknown keys are errors; instances are immutable."""

from __future__ import annotations

from pydantic import BaseModel

from loomgit.models.repository import EnvironmentDecl, Layout, Repository
from loomgit.models.state import EnvironmentState, Variables, WorkflowState
from loomgit.models.workflow import (
    ApiTrigger,
    ManualTrigger,
    ScheduleTrigger,
    Step,
    WebhookTrigger,
    Workflow,
)

DOCUMENT_KINDS: dict[str, type[BaseModel]] = {
    "repository": Repository,
    "workflow": Workflow,
    "environment": EnvironmentState,
    "variables": Variables,
}

__all__ = [
    "DOCUMENT_KINDS",
    "ApiTrigger",
    "EnvironmentDecl",
    "EnvironmentState",
    "Layout",
    "ManualTrigger",
    "Repository",
    "ScheduleTrigger",
    "Step",
    "Variables",
    "WebhookTrigger",
    "Workflow",
    "WorkflowState",
]
