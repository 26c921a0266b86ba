"""The daemon's HTTP API as an OpenAPI 3.1 document, served at /openapi.json. A test
checks that every route the server registers is described here."""

from __future__ import annotations

from typing import Any

from loomgit import __version__
from loomgit.models.base import ENV_NAME, NAME
from loomgit.records import STATUSES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    out["content"] = {"application/json": {"schema": _ERROR if schema is None else schema}}
    return out


_ACCEPTED = _answer("Recorded and started", {"$ref": "#/components/schemas/Accepted"})
_REPEAT = _answer(
    "The Idempotency-Key was seen before: the first execution",
    {"$ref": "#/components/schemas/Accepted"},
)
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_ENV = {"type": "string", "pattern": ENV_NAME}  # as loomgit.yaml allows
_ID = {"type": "string", "pattern": "^[0-9A-Za-z]{6,26}$"}  # an id, or its first 6 or more
_RETRY_FROM = {"type": "string", "enum": ["start", "failed_step"], "default": "start"}
# Only one version's executions: each workflow numbers its own, so a 400 without workflow.
_VERSION = {
    "type": "string",
    "pattern": "^[vV]?[0-9]{1,18}$",
    "description": "A version of the workflow named (3 or v3); needs workflow",
}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "loomgit daemon",
            "version": __version__,
            "description": "Webhooks, API triggers and the live state of `loomgit serve`.",
        },
        "paths": {
            "/hooks/{environment}/{path}": {
                "post": {
                    "summary": "A workflow's webhook trigger (any method the trigger names)",
                    "description": "The trigger's path, one or more segments. A segment"
                    " the trigger names `:name` takes any value, which the workflow reads as"
                    " `trigger.params.name`; a literal segment wins over such a one.",
                    "parameters": [_path("environment", _ENV), _path("path")],
                    "requestBody": {"content": {"*/*": {}}},
                    "responses": {
                        "200": _answer(
                            "The Idempotency-Key was seen before: the first execution. For a"
                            " `respond: sync` trigger, the first execution's answer instead,"
                            " once it has ended (within respond_timeout), with the header"
                            " Idempotent-Replayed: true",
                            {"$ref": "#/components/schemas/Accepted"},
                        ),
                        "202": _ACCEPTED,
                        "default": {
                            "description": "respond: sync: the respond step's status,"
                            " headers and body, or 200 with the execution's id and output"
                        },
                        "400": _answer(
                            "A JSON body that is not standard JSON or nests past 100"
                            " levels, or an idempotency key over 255 characters"
                        ),
                        "401": _answer("The trigger's auth header or signature check failed"),
                        "404": _answer("No active webhook there; nothing recorded"),
                        "405": _answer(
                            "The path is active with other methods only (Allow names"
                            " them); nothing recorded"
                        ),
                        "408": _answer("The head (30 s) or the body (60 s) came too slowly"),
                        "413": _answer("The body is over the limit"),
                        "415": _answer("The body is compressed (Content-Encoding)"),
                        "431": _answer("The request line and headers are over 64 KiB"),
                        "500": _answer(
                            "respond: sync: the execution failed (its id, status and error)"
                        ),
                        "503": _answer(
                            "The environment is not reconciled yet, or the backlog of"
                            " executions is full (Retry-After); respond: sync: the daemon"
                            " stopped before the execution finished"
                        ),
                        "504": _answer("respond: sync: the execution timed out"),
                    },
                }
            },
            "/api/v1/workflows/{name}/executions": {
                "post": {
                    "summary": "Start a workflow with an api trigger",
                    "security": _AUTH,
                    "parameters": [_path("name", {"type": "string", "pattern": NAME})],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "environment": {
                                            **_ENV,
                                            "description": "default: the last environment",
                                        },
                                        "input": {"description": "trigger.body"},
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        }
                    },
                    "responses": {
                        "200": _REPEAT,
                        "202": _ACCEPTED,
                        "400": _answer("The body is not that object, or not JSON"),
                        "401": _answer("No valid bearer token"),
                        "404": _answer("No such active api trigger"),
                        "415": _answer("The body is compressed (Content-Encoding)"),
                        "503": _answer("The backlog of executions is full (Retry-After)"),
                    },
                }
            },
            "/api/v1/git-webhook": {
                "post": {
                    "summary": "The git host's push webhook: reconcile now",
                    "parameters": [
                        {
                            "name": "X-Hub-Signature-256",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _answer("A ping", {"type": "object"}),
                        "202": _answer("A cycle was started", {"type": "object"}),
                        "401": _answer("Missing or wrong signature"),
                        "404": _answer("No --git-webhook-secret-file was given"),
                        "415": _answer("The body is compressed (Content-Encoding)"),
                    },
                }
            },
            "/api/v1/reconcile": {
                "post": {
                    "summary": "Run a reconcile cycle and return the environments",
                    "security": _AUTH,
                    "responses": {
                        "200": _answer("The environments after the cycle", _ENVIRONMENTS),
                        "401": _answer("No valid bearer token"),
                    },
                }
            },
            "/api/v1/environments": {
                "get": {
                    "summary": "Each environment's commit, conditions, events and workflows",
                    "responses": {"200": _answer("The environments", _ENVIRONMENTS)},
                }
            },
            "/api/v1/executions": {
                "get": {
                    "summary": "Executions, newest first",
                    "security": _AUTH,
                    "parameters": [
                        _query(
                            "environment",
                            {
                                "type": "string",
                                "minLength": 1,
                                "description": "One loomgit.yaml lists, or one it no longer"
                                " does but the history holds; any other is a 400",
                            },
                        ),
                        # any name: one never recorded gives []; an empty one is a 400
                        _query("workflow", {"type": "string", "minLength": 1}),
                        _query("version", _VERSION),
                        _query("status", {"type": "string", "enum": list(STATUSES)}),
                        _query(
                            "since",
                            {
                                "type": "string",
                                "minLength": 1,
                                "description": "Started since: a Unix time, an age (30m, 2h,"
                                " 7d) or an ISO date, as the CLI's --since",
                            },
                        ),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        ),
                        _query(
                            "before",
                            {
                                **_ID,
                                "description": "An execution's id: the page after it. A"
                                " full page's `Link` header (rel=next) gives the next one.",
                            },
                        ),
                    ],
                    "responses": {
                        "200": _answer(
                            "Executions without their steps",
                            {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
                        ),
                        "400": _answer("A bad filter, or an unknown environment"),
                        "401": _answer("No valid bearer token"),
                    },
                }
            },
            "/api/v1/executions/summary": {
                "get": {
                    "summary": "Each workflow version's executions since a time, by"
                    " environment: counts by status, failure rate, durations, top errors",
                    "description": "The failure rate is failed and timed-out executions"
                    " among those that succeeded, failed or timed out (null when none"
                    " did). Durations are nearest-rank percentiles of those that ended.",
                    "security": _AUTH,
                    "parameters": [
                        _query("environment", {"type": "string", "minLength": 1}),
                        _query("workflow", {"type": "string", "minLength": 1}),
                        _query("version", _VERSION),
                        _query(
                            "since",
                            {
                                "type": "string",
                                "minLength": 1,
                                "default": "24h",
                                "description": "Started since: a Unix time, an age (30m, 2h,"
                                " 7d) or an ISO date, as the CLI's --since",
                            },
                        ),
                    ],
                    "responses": {
                        "200": _answer("The summary", _SUMMARY),
                        "400": _answer("A bad filter, or an unknown environment"),
                        "401": _answer("No valid bearer token"),
                    },
                }
            },
            "/api/v1/executions/{id}": {
                "get": {
                    "summary": "One execution with its steps (by id or its first 6+ characters)",
                    "security": _AUTH,
                    "parameters": [_path("id", _ID)],
                    "responses": {
                        "200": _answer("The execution", {"$ref": "#/components/schemas/Execution"}),
                        "401": _answer("No valid bearer token"),
                        "404": _answer("No such execution"),
                    },
                }
            },
            "/api/v1/executions/{id}/retry": {
                "get": {
                    "summary": "What a retry of an execution would do, doing nothing",
                    "description": "As POST would answer it, without recording or running"
                    " anything: 200 with `execution` null (or the retry made before, with"
                    " `replayed`), or the 409 POST would give.",
                    "security": _AUTH,
                    "parameters": [
                        _path("id", _ID),
                        {"name": "from", "in": "query", "schema": _RETRY_FROM},
                    ],
                    "responses": {
                        "200": _answer("What it would do", {"$ref": "#/components/schemas/Retry"}),
                        "400": _answer("`from` is neither start nor failed_step"),
                        "401": _answer("No valid bearer token"),
                        "404": _answer("No such execution"),
                        "409": _answer("It would not be retried: why"),
                    },
                },
                "post": {
                    "summary": "Run an execution that did not succeed again",
                    "description": "In its environment, with the trigger it recorded, as the"
                    " environment serves the workflow now. The trigger's redacted headers"
                    " (Authorization, Cookie, API keys) are left out; the retry's trigger"
                    " names the execution it retries (`retry_of`). Each execution is retried"
                    " once: asking again answers 200 with that retry. A manual run, or one"
                    " whose body, query or path parameters were recorded redacted, is not"
                    " retried (409). Every step runs again, unless `from` is failed_step:"
                    " the retry then starts at the step that failed, taking the steps before"
                    " it as the execution recorded them (`resumed_from` names that step);"
                    " refused (409) where one of them was recorded redacted or truncated, or"
                    " the version served now would not have run it just so.",
                    "security": _AUTH,
                    "parameters": [_path("id", _ID)],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"from": _RETRY_FROM},
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _answer(
                            "Retried before: that retry", {"$ref": "#/components/schemas/Retry"}
                        ),
                        "202": _answer(
                            "Recorded and started", {"$ref": "#/components/schemas/Retry"}
                        ),
                        "400": _answer("The body is not that object, or not JSON"),
                        "401": _answer("No valid bearer token"),
                        "404": _answer("No such execution"),
                        "409": _answer(
                            "It succeeded or is running, was a manual run, held a redacted"
                            " value, its workflow is no longer active in its environment, or"
                            " it cannot start at the step that failed"
                        ),
                        "413": _answer("The body is over 4 KiB"),
                        "503": _answer(
                            "The environment is not reconciled yet, or the backlog of"
                            " executions is full (Retry-After)"
                        ),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Alive",
                    "responses": {
                        "200": _answer(
                            "ok",
                            {
                                "type": "object",
                                "properties": {"status": {"const": "ok"}},
                                "required": ["status"],
                            },
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The first reconcile has ended and an environment serves",
                    "description": "With `environments`, ready only once each of those "
                    "serves (a rollout gate). The answer gives each environment's commit "
                    "served (or null) and the reason of its Ready condition.",
                    "parameters": [
                        {
                            "name": "environments",
                            "in": "query",
                            "required": False,
                            "description": "Comma-separated; each must serve",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _answer("Ready", {"type": "object"}),
                        "400": _answer("An environment this daemon does not serve"),
                        "503": _answer("Not yet, or not any more (with Retry-After)"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _answer("it", {})}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "execution": {"type": "string"},
                        "environment": {"type": "string"},
                        "workflow": {"type": "string"},
                    },
                },
                "Retry": {
                    "type": "object",
                    "properties": {
                        "execution": {
                            "type": ["string", "null"],
                            "description": "the retry's id (null: none made, for GET)",
                        },
                        "environment": {"type": "string"},
                        "workflow": {"type": "string"},
                        "version": {"type": ["integer", "null"]},
                        "retry_of": {"type": "string"},
                        "replayed": {"type": "boolean", "description": "retried before"},
                        "resumed_from": {
                            "type": ["string", "null"],
                            "description": "the step it starts at; null: the first",
                        },
                    },
                },
                "Execution": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "environment": {"type": "string"},
                        "workflow": {"type": "string"},
                        "version": {"type": ["integer", "null"]},
                        "status": {"type": "string", "enum": list(STATUSES)},
                        "trigger": {"type": "object"},
                        "started_at": {"type": "string"},
                        "ended_at": {"type": ["string", "null"]},
                        "error": {"type": ["string", "null"]},
                        "output": {},
                        "steps": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    }


_CONDITION = {
    "type": "object",
    "description": "The Ready condition (conditions), or something that happened (events).",
    "properties": {
        "type": {"type": "string", "enum": ["Ready", "Event"]},
        "status": {"type": "string", "enum": ["True", "False"]},
        "reason": {"type": "string", "examples": ["Ready", "ValidationFailed"]},
        "message": {"type": "string"},
        "last_transition": {"type": "string", "format": "date-time"},
    },
}

_SUMMARY = {
    "type": "object",
    "properties": {
        "since": {"type": "string", "format": "date-time"},
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "environment": {"type": "string"},
                    "workflow": {"type": "string"},
                    "version": {"type": ["integer", "null"]},
                    "executions": {"type": "integer"},
                    "statuses": {
                        "type": "object",
                        "description": "How many of each status; statuses with none left out",
                        "additionalProperties": {"type": "integer"},
                    },
                    "failure_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "duration_ms": {
                        "type": "object",
                        "properties": {
                            "p50": {"type": ["number", "null"]},
                            "p95": {"type": ["number", "null"]},
                        },
                    },
                    "last_started_at": {"type": "string", "format": "date-time"},
                    "errors": {
                        "type": "array",
                        "description": "The three most frequent errors, most first;"
                        " errors that differ only in a time, an id or a number of 4 digits"
                        " or more count as one, with … where they differ",
                        "items": {
                            "type": "object",
                            "properties": {
                                "error": {"type": "string"},
                                "count": {"type": "integer"},
                            },
                        },
                    },
                },
            },
        },
    },
}

_ENVIRONMENTS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "commit": {"type": ["string", "null"]},
            "last_applied_commit": {"type": ["string", "null"]},
            "last_attempted_commit": {"type": ["string", "null"]},
            "conditions": {"type": "array", "items": _CONDITION},
            "events": {"type": "array", "items": _CONDITION},
            "workflows": {"type": "object"},
        },
    },
}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema or {"type": "string"}}
