"""The daemon's Prometheus metrics, served at /metrics (prometheus_client, one registry
per daemon)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["CONTENT_TYPE", "Metrics"]

# No `…_created` sample beside each counter, histogram and labelled child: in the text
# format Prometheus stores each as one more series of its own, a timestamp no query of
# ours needs (when the daemon started is `process_start_time_seconds`).
disable_created_metrics()  # type: ignore[no-untyped-call]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, by_workflow: bool = False) -> None:
        """`by_workflow`: executions finished are counted by workflow too (one series
        per workflow, environment and status seen: with thousands of workflows, more to
        store and a longer scrape)."""
        r = self.registry = CollectorRegistry()
        self.by_workflow = by_workflow
        # The daemon process's memory, CPU, open files and start time (`process_…`), the
        # interpreter's collections (`python_gc_…`) and version (`python_info`), as
        # prometheus_client's default registry has them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.reconcile_seconds = Histogram(
            "loomgit_reconcile_duration_seconds",
            "Time one reconcile cycle took",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.reconciles = Counter(
            "loomgit_reconcile",
            "Reconciles of an environment by result (the condition's reason)",
            ["environment", "result"],
            registry=r,
        )
        self.started = Counter(
            "loomgit_executions_started",
            "Executions started, by environment and trigger type",
            ["environment", "trigger"],
            registry=r,
        )
        self.finished = Counter(
            "loomgit_executions",
            "Executions finished, by environment, status"
            + (" and workflow" if by_workflow else " (and workflow with --metrics-by-workflow)"),
            ["environment", "workflow", "status"] if by_workflow else ["environment", "status"],
            registry=r,
        )
        self.unrecorded = Counter(
            "loomgit_executions_unrecorded",
            "Executions refused (webhook, api) or not fired (schedule) because the execution"
            " history could not record them",
            ["environment", "trigger"],
            registry=r,
        )
        self.refused = Counter(
            "loomgit_executions_refused",
            "Executions refused with 503 (webhook, api) because --max-backlog executions had"
            " not ended",
            ["environment", "trigger"],
            registry=r,
        )
        self.pruned = Counter(
            "loomgit_executions_pruned",
            "Finished executions deleted by --prune-older-than / --prune-keep",
            ["environment"],
            registry=r,
        )
        self.http_refused = Counter(
            "loomgit_http_refused",
            "Requests refused before they reached loomgit, by reason: head_too_large (431),"
            " too_slow (408: the head or the body did not arrive in time), idle (a connection"
            " that sent nothing, closed)",
            ["reason"],
            registry=r,
        )
        self.api_refused = Counter(
            "loomgit_api_refused",
            "API requests refused for their credentials, by endpoint (run, executions,"
            " summary, execution, reconcile, git_webhook) and reason: missing (401: no"
            " bearer token), wrong (401: not one of the daemon's tokens), no_tokens (401:"
            " the daemon has none), signature (401: the git webhook's X-Hub-Signature-256)",
            ["endpoint", "reason"],
            registry=r,
        )
        self.webhooks_refused = Counter(
            "loomgit_webhook_refused",
            "Requests to a served webhook path refused, by environment and reason: auth"
            " (401: no shared secret in the header), signature (401), method (405), body"
            " (400: not JSON as its Content-Type says, or cut short), too_large (413),"
            " encoding (415: a compressed body)",
            ["environment", "reason"],
            registry=r,
        )
        self.backlog = Gauge(
            "loomgit_executions_backlog",
            "Executions accepted or fired that have not ended (waiting to run or running)",
            registry=r,
        )
        self.max_backlog = Gauge(
            "loomgit_executions_backlog_limit",
            "--max-backlog: past this many, webhooks and API triggers are refused",
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "loomgit_webhook_duration_seconds",
            "Time from a webhook request to its answer (recorded, then 202)",
            ["environment"],
            registry=r,
            buckets=_FAST,
        )
        self.schedule_lateness = Histogram(
            "loomgit_schedule_lateness_seconds",
            "Time from a schedule's due instant to its execution being recorded",
            registry=r,
            buckets=_FAST,
        )
        self.schedules_skipped = Counter(
            "loomgit_schedule_skipped",
            "Scheduled times skipped because the previous run still ran (overlap: skip)",
            ["environment"],
            registry=r,
        )
        # What alerts are written on, as Flux's condition gauge: `== 0` for a while means
        # a bad commit or git out of reach, and the last good state still serving.
        self.ready = Gauge(
            "loomgit_environment_ready",
            "1 while the environment's Ready condition is true (its last commit applied)",
            ["environment"],
            registry=r,
        )
        self.applied_at = Gauge(
            "loomgit_environment_applied_timestamp_seconds",
            "When the commit the environment serves was applied (Unix time)",
            ["environment"],
            registry=r,
        )
        self.active = Gauge(
            "loomgit_active_workflows", "Active workflows served", ["environment"], registry=r
        )
        self.schedules = Gauge("loomgit_schedules", "Schedules the timer holds", registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """`metric.labels(*values)`, kept for the next time: every accepted webhook
        counts on three of these, and `labels` checks its values and takes a lock."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
