"""The execution engine: runs one workflow in one environment, step by step, and records
the execution. Templates see `trigger`, `steps.<id>.output`, `credentials`, `vars`, `env`
and `workflow`; everything recorded, printed or logged passes through the redactor first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from loomgit import steps as step_kinds
from loomgit.httpclient import Client
from loomgit.models.workflow import Step, Workflow
from loomgit.records import Execution, StepRecord, new_id, owner_id
from loomgit.redact import Redactor
from loomgit.render import RenderError, evaluate
from loomgit.steps import StepContext, StepError

DEFAULT_TIME_LIMIT = 300.0


@dataclass(frozen=True)
class TriggerEvent:
    """What started an execution: `type` is manual, webhook, schedule or api."""

    type: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    scheduled_time: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # path, method, caller…
    params: Mapping[str, str] = field(default_factory=dict)  # a webhook path's :parameters
    # A retry from the step that failed: the steps before it, as the execution it retries
    # recorded them, taken as they are instead of run again (see `loomgit.retry`).
    resume: tuple[StepRecord, ...] = ()

    def context(self) -> dict[str, Any]:
        """What templates see as `trigger`: templates.TRIGGER_FIELDS, which validate checks."""
        return {
            "type": self.type,
            "body": self.body,
            "headers": dict(self.headers),
            "query": dict(self.query),
            "params": dict(self.params),
            "scheduled_time": self.scheduled_time,
        }

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.details)
        if self.scheduled_time is not None:
            out["scheduled_time"] = self.scheduled_time
        if self.body is not None:
            out["body"] = self.body
        if self.params:
            out["params"] = dict(self.params)
        if self.query:
            out["query"] = dict(self.query)
        if self.headers:
            out["headers"] = dict(self.headers)
        return out


@dataclass(frozen=True)
class Deployment:
    """A workflow as it runs in one environment, with that environment's values."""

    workflow: Workflow
    environment: str
    version: int | None = None
    digest: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    credentials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def name(self) -> str:
        return self.workflow.metadata.name


class Recorder(Protocol):
    """Where executions are recorded (the history store, through its writer)."""

    async def start(self, ex: Execution) -> Execution: ...

    async def finish(self, ex: Execution) -> None: ...


class Listener(Protocol):
    """Progress as it happens (the CLI prints it); every value is already redacted."""

    def execution_started(self, ex: Execution) -> None: ...

    def step_finished(self, step: StepRecord) -> None: ...

    def log(self, step_id: str, level: str, message: str) -> None: ...


@dataclass
class _Current:
    """The step in progress, so a cancelled or timed-out execution records where it was."""

    position: int
    step: Step
    started_at: float
    attempts: int = 0
    input: Any = None
    logs: list[dict[str, Any]] = field(default_factory=list)


class Engine:
    """Runs executions; one engine serves any number of them at once."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        time_limit: float = DEFAULT_TIME_LIMIT,
        client: Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.time_limit = time_limit
        self.client = client or Client()
        self.clock = clock
        self.stopping = False  # set by a shutting-down daemon: cancels are interruptions

    async def close(self) -> None:
        await self.client.close()

    async def execute(
        self,
        dep: Deployment,
        trigger: TriggerEvent,
        *,
        dedupe_key: str | None = None,
        time_limit: float | None = None,
        listener: Listener | None = None,
    ) -> Execution:
        """Records the execution, runs it, and returns its final record. With a
        `dedupe_key` seen before, returns the first execution without running again."""
        proposed = self.new_execution(dep, trigger, dedupe_key)
        started = await self.recorder.start(proposed)
        if started.id != proposed.id:  # the dedupe key was used before: that one stands
            return started
        if listener:
            listener.execution_started(started)
        return await self.run(dep, trigger, started, time_limit=time_limit, listener=listener)

    def new_execution(
        self,
        dep: Deployment,
        trigger: TriggerEvent,
        dedupe_key: str | None = None,
        status: str = "running",
    ) -> Execution:
        now = self.clock()
        return Execution(
            id=new_id(now),
            environment=dep.environment,
            workflow=dep.name,
            version=dep.version,
            digest=dep.digest,
            trigger_type=trigger.type,
            trigger=dep.redactor.value(trigger.record()),
            dedupe_key=dedupe_key,
            status=status,
            started_at=now,
            owner=owner_id(),
        )

    async def run(
        self,
        dep: Deployment,
        trigger: TriggerEvent,
        ex: Execution,
        *,
        time_limit: float | None = None,
        listener: Listener | None = None,
    ) -> Execution:
        """Runs a recorded execution to its end and records the outcome."""
        limit = time_limit or dep.workflow.spec.timeout or self.time_limit
        redact = dep.redactor
        outputs: dict[str, dict[str, Any]] = {}
        ctx = context(dep, trigger, outputs)
        done: list[StepRecord] = []
        status, error, stopped = "succeeded", None, None
        output: Any = None
        response: Any = None
        current: _Current | None = None
        for record in trigger.resume:
            done.append(record)
            outputs[record.step_id] = step_fields(record, record.output)
            if listener:
                listener.step_finished(record)
            if record.status == "succeeded":
                output = record.output
                if record.type == "respond":
                    response = record.output
        try:
            async with asyncio.timeout(limit):
                for position, step in enumerate(dep.workflow.spec.steps):
                    if position < len(trigger.resume):
                        continue
                    current = _Current(position, step, self.clock())
                    record, value = await self._step(current, ctx, dep, listener)
                    current = None
                    done.append(record)
                    outputs[step.id] = step_fields(record, value)
                    if listener:
                        listener.step_finished(record)
                    if record.status == "succeeded":
                        output = value
                        if step.type == "respond":
                            response = value
                    elif record.status != "skipped" and step.on_error == "stop":
                        status, stopped = "failed", step.id
                        error = f"step {step.id} {record.status.replace('_', ' ')}: {record.error}"
                        break
        except TimeoutError:
            status, error = "timed_out", f"the execution exceeded its time limit of {limit:g}s"
            stopped = self._interrupted(current, done, "timed_out", error, redact, listener)
        except asyncio.CancelledError:
            reason = "interrupted" if self.stopping else "cancelled"
            error = (
                "interrupted: the daemon stopped before it finished"
                if reason == "interrupted"
                else "the execution was cancelled"
            )
            stopped = self._interrupted(current, done, reason, error, redact, listener)
            final = self._final(ex, reason, error, stopped, output, response, done, redact)
            await asyncio.shield(self.recorder.finish(final))
            raise
        final = self._final(ex, status, error, stopped, output, response, done, redact)
        await self.recorder.finish(final)
        return final

    def _final(
        self,
        ex: Execution,
        status: str,
        error: str | None,
        stopped: str | None,
        output: Any,
        response: Any,
        done: list[StepRecord],
        redact: Redactor,
    ) -> Execution:
        return replace(
            ex,
            status=status,
            ended_at=self.clock(),
            stopped_at=stopped,
            error=redact.text(error) if error else None,
            output=redact.value(response if response is not None else output),
            steps=tuple(done),
        )

    def _interrupted(
        self,
        current: _Current | None,
        done: list[StepRecord],
        status: str,
        error: str,
        redact: Redactor,
        listener: Listener | None,
    ) -> str | None:
        if current is None:
            return None
        record = StepRecord(
            position=current.position,
            step_id=current.step.id,
            type=current.step.type,
            status=status,
            started_at=current.started_at,
            ended_at=self.clock(),
            attempts=current.attempts,
            input=redact.value(current.input),
            error=error,
            logs=tuple(current.logs),
        )
        done.append(record)
        if listener:
            listener.step_finished(record)
        return current.step.id

    async def _step(
        self, cur: _Current, ctx: dict[str, Any], dep: Deployment, listener: Listener | None
    ) -> tuple[StepRecord, Any]:
        step, redact = cur.step, dep.redactor

        def log(level: str, message: str) -> None:
            line = redact.text(message)
            cur.logs.append({"at": round(self.clock(), 3), "level": level, "message": line})
            if listener:
                listener.log(step.id, level, line)

        def record(status: str, output: Any = None, error: str | None = None) -> StepRecord:
            return StepRecord(
                position=cur.position,
                step_id=step.id,
                type=step.type,
                status=status,
                started_at=cur.started_at,
                ended_at=self.clock(),
                attempts=cur.attempts,
                input=redact.value(cur.input),
                output=redact.value(output),
                error=redact.text(error) if error else None,
                logs=tuple(cur.logs),
            )

        try:
            if step.when is not None and not when(step.when, ctx):
                return record("skipped"), None
            kind = step_kinds.kind(step.type)
            cur.input = kind.render(step.with_, ctx)
            params = kind.parse(cur.input)
        except (RenderError, StepError) as exc:
            return record("failed", error=str(exc)), None
        sctx = StepContext(ctx, dep.environment, self.client, log)
        timeout = kind.timeout(params, step.timeout)
        retry = step.retry
        attempts = retry.attempts if retry else 1
        wait = retry.backoff if retry else 0.0
        while True:
            cur.attempts += 1
            try:
                async with asyncio.timeout(timeout):
                    value = await kind.run(params, sctx)
                return record("succeeded", value), value
            except TimeoutError:
                failure, message = "timed_out", f"no result within {timeout:g}s"
                if not kind.stoppable:
                    message += (
                        f" (the {step.type} step's run function is not async: it cannot be"
                        " stopped, and goes on in its thread until it returns)"
                    )
                retryable = True
            except StepError as exc:
                failure, message, retryable = "failed", str(exc), exc.retryable
            except Exception as exc:  # a plugin may raise anything: its step fails
                failure, message, retryable = "failed", f"{type(exc).__name__}: {exc}", True
            if not retryable or cur.attempts >= attempts:
                return record(failure, error=message), None
            log("warning", f"attempt {cur.attempts} of {attempts} failed: {message}")
            await asyncio.sleep(wait)
            wait *= retry.factor if retry else 1.0


def context(
    dep: Deployment, trigger: TriggerEvent, outputs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """What a step's templates see: `outputs` holds the steps run so far, by id."""
    return {
        "trigger": trigger.context(),
        "steps": outputs,
        "credentials": dep.credentials,
        "vars": dep.variables,
        "env": dep.environment,
        "workflow": {"name": dep.name, "version": dep.version},
    }


def step_fields(record: StepRecord, value: Any) -> dict[str, Any]:
    """A finished step as templates see it (`steps.<id>.output`…): templates.STEP_FIELDS,
    which validate checks. `value` is its output unredacted, where it was just run."""
    return {"output": value, "status": record.status, "error": record.error}


def when(expression: str, context: dict[str, Any]) -> Any:
    """A step's `when:`, whose failure names it (`when: …`)."""
    try:
        return evaluate(expression, context)
    except RenderError as exc:
        raise exc.within("when") from None
