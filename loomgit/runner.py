"""Manual runs (`loomgit run`): the work tree's definition of a workflow, run once in the
first environment with that environment's variables and credentials, and recorded."""

from __future__ import annotations

import asyncio
import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loomgit import desired
from loomgit.agekeys import AgeKeys
from loomgit.credops import key_files
from loomgit.errors import UsageError
from loomgit.history import History
from loomgit.layout import snapshot
from loomgit.models.base import Duration
from loomgit.recorder import AsyncRecorder
from loomgit.records import Execution
from loomgit.runtime import Deployment, Engine, Listener, TriggerEvent
from loomgit.workspace import Workspace


@dataclass(frozen=True)
class Result:
    execution: Execution
    path: str  # the workflow file that ran


def parse_duration(text: str, option: str) -> float:
    """The seconds of a duration given on the command line as `option` (`--timeout`)."""
    try:
        return float(TypeAdapter(Duration).validate_python(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("greater_than", "less_than_equal"):
            message = f"{option} {text}: give a duration above 0 and at most 24h"
        else:  # the message names the text
            message = f"{option}: " + first["msg"].removeprefix("Value error, ")
        raise UsageError(message) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


async def execute(
    dep: Deployment,
    trigger: TriggerEvent,
    history: History,
    *,
    time_limit: float | None = None,
    listener: Listener | None = None,
) -> Execution:
    """Runs one execution and waits until it is recorded."""
    recorder = AsyncRecorder(history)
    engine = Engine(recorder)
    try:
        return await engine.execute(dep, trigger, time_limit=time_limit, listener=listener)
    finally:
        await engine.close()
        recorder.close()


def run_manual(
    repo: Path,
    workflow: str,
    body: Any,
    age_keys: AgeKeys,
    history: History,
    *,
    env: str | None = None,
    time_limit: float | None = None,
    listener: Listener | None = None,
) -> Result:
    with Workspace(repo) as ws:
        first = ws.config.names[0]
        if env is not None and ws.check_env(env) != first:
            raise UsageError(
                f"manual runs always run in the first environment ({first}), never in {env}",
                hint=f"{env} runs a workflow only through its triggers, once it is promoted "
                "and active there",
            )
        keys = key_files(ws, age_keys)
        snap = snapshot(ws.root, ws.git, ws.cache)
        found = desired.plan(snap, ws.cache, first, workflow)
        dep = desired.with_credentials(snap, found, keys.get(first))
    trigger = TriggerEvent("manual", body=body, details={"user": _user()})
    ex = asyncio.run(execute(dep, trigger, history, time_limit=time_limit, listener=listener))
    return Result(ex, found.path)
