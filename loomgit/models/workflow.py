"""The Workflow document: metadata, triggers, declared credentials, steps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from loomgit.models.base import (
    IDENTIFIER,
    ApiVersion,
    Duration,
    Identifier,
    StrictModel,
    WorkflowName,
)
from loomgit.wording import pattern

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
_SEGMENT = r"(?:[A-Za-z0-9._~-]+|:[A-Za-z_][A-Za-z0-9_]*)"  # literal, or a :parameter
WEBHOOK_PATH = pattern(
    rf"^/?{_SEGMENT}(?:/{_SEGMENT})*$",
    "URL path segments of letters, digits and '.', '_', '~', '-', separated by '/'; "
    "a segment ':name' takes any value, as trigger.params.name",
)
STEP_TYPE = pattern(
    r"^[a-z][a-z0-9_.-]*$", "lowercase letters, digits, '_', '.' and '-', starting with a letter"
)
HEADER_NAME = pattern(r"^[A-Za-z0-9-]+$", "an HTTP header name: letters, digits and '-'")


class Metadata(StrictModel):
    name: WorkflowName = Field(description="equals the file name without .yaml")
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class WebhookSignature(StrictModel):
    """HMAC-SHA256 of the raw body: hex, optionally prefixed `sha256=` (GitHub's format),
    or base64 (Shopify's `X-Shopify-Hmac-Sha256`)."""

    credential: Annotated[str, Field(pattern=IDENTIFIER)] = Field(
        description="a credential the workflow declares; its `field` is the shared secret"
    )
    field: str = Field(default="secret", min_length=1, description="the field holding the secret")
    header: str = Field(default="X-Hub-Signature-256", pattern=HEADER_NAME, max_length=100)
    encoding: Literal["hex", "base64"] = Field(
        default="hex", description="how the header gives the digest: hex (GitHub) or base64"
    )

    def secret_fields(self) -> list[tuple[str, str]]:
        """The credential's fields this check reads, each with the key that names it."""
        return [("field", self.field)]


class WebhookAuth(StrictModel):
    """A shared secret sent in a header, as Prometheus Alertmanager and Grafana send one:
    `Authorization: Bearer <secret>`, `Authorization: Basic <base64 of user:password>`
    (scheme: basic), or the whole value of any other header (`X-Api-Key: <secret>`)."""

    credential: Annotated[str, Field(pattern=IDENTIFIER)] = Field(
        description="a credential the workflow declares; its `field` is the shared secret"
    )
    field: str | None = Field(
        default=None,
        min_length=1,
        description="the field holding the secret (default: token), or for scheme basic the "
        "password (default: password)",
    )
    header: str = Field(
        default="Authorization",
        pattern=HEADER_NAME,
        max_length=100,
        description="Authorization: the value is `Bearer <secret>` (or `Basic …`, with "
        "scheme: basic); any other header: the value is the secret",
    )
    scheme: Literal["bearer", "basic"] = Field(
        default="bearer",
        description="with the Authorization header: bearer (a token) or basic (RFC 7617: a "
        "user name and password)",
    )
    user_field: str = Field(
        default="user", min_length=1, description="scheme basic: the field holding the user name"
    )

    @field_validator("scheme")
    @classmethod
    def _authorization_only(cls, scheme: str, info: ValidationInfo) -> str:
        header = info.data.get("header", "Authorization")
        if scheme == "basic" and header.lower() != "authorization":
            raise ValueError(f"scheme basic is sent in the Authorization header, not {header}")
        return scheme

    @property
    def header_scheme(self) -> str | None:
        """The scheme the header's value starts with: none outside Authorization."""
        return self.scheme if self.header.lower() == "authorization" else None

    @property
    def basic(self) -> bool:
        return self.scheme == "basic"

    @property
    def secret_field(self) -> str:
        return self.field or ("password" if self.basic else "token")

    def secret_fields(self) -> list[tuple[str, str]]:
        """The credential's fields this check reads, each with the key that names it."""
        fields = [("field", self.secret_field)]
        return [("user_field", self.user_field), *fields] if self.basic else fields


class WebhookTrigger(StrictModel):
    """Served at /hooks/<environment>/<path> in every environment where the workflow is active."""

    type: Literal["webhook"]
    path: str = Field(pattern=WEBHOOK_PATH, max_length=200)
    method: HttpMethod = "POST"
    respond: Literal["async", "sync"] = Field(
        default="async",
        description="async: 202 with the execution id; sync: the output of the respond "
        "step (or the last step), waiting up to respond_timeout",
    )
    respond_timeout: Duration = Field(
        default=30.0, description="sync only: after this long, 202 with the execution id"
    )
    signature: WebhookSignature | None = Field(
        default=None, description="refuse requests without a valid HMAC-SHA256 signature (401)"
    )
    auth: WebhookAuth | None = Field(
        default=None, description="refuse requests without the shared secret in a header (401)"
    )

    @field_validator("path")
    @classmethod
    def _segments(cls, path: str) -> str:
        segments = path.strip("/").split("/")
        if any(seg in (".", "..") for seg in segments):
            raise ValueError("a webhook path may not contain '.' or '..' segments")
        names = [seg[1:] for seg in segments if seg.startswith(":")]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"the path parameter ':{twice[0]}' is named twice")
        return path

    @property
    def route(self) -> str:
        return self.path.strip("/")

    def secret_checks(self) -> list[tuple[str, WebhookSignature | WebhookAuth]]:
        """The checks that read a credential's field, by their key in the trigger."""
        checks: list[tuple[str, WebhookSignature | WebhookAuth]] = []
        if self.signature is not None:
            checks.append(("signature", self.signature))
        if self.auth is not None:
            checks.append(("auth", self.auth))
        return checks


class ScheduleTrigger(StrictModel):
    """Fires at its cron time in its time zone, in every environment where it is active."""

    type: Literal["schedule"]
    cron: str = Field(min_length=1, description="five-field cron expression or @hourly/@daily/…")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin")
    overlap: Literal["skip", "allow"] = Field(
        default="skip", description="skip: no new run while this schedule's last one runs"
    )
    catchup: Literal["none", "latest"] = Field(
        default="none", description="after downtime: none, or run the latest missed time once"
    )


class ApiTrigger(StrictModel):
    """Started through the HTTP API; the environment defaults to the last one."""

    type: Literal["api"]


class ManualTrigger(StrictModel):
    """Started by a person with `loomgit run`; always runs in the first environment."""

    type: Literal["manual"]


Trigger = Annotated[
    WebhookTrigger | ScheduleTrigger | ApiTrigger | ManualTrigger,
    Field(discriminator="type"),
]


class Retry(StrictModel):
    attempts: int = Field(default=1, ge=1, le=10, description="total attempts, the first included")
    backoff: Duration = Field(default=1.0, description="wait before the second attempt")
    factor: float = Field(default=2.0, ge=1.0, le=10.0, description="backoff multiplier")


class Step(StrictModel):
    id: Identifier = Field(description="unique within the workflow; referenced as steps.<id>")
    type: str = Field(pattern=STEP_TYPE, description="a built-in or plugin type")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="parameters of the step type"
    )
    when: str | None = Field(default=None, description="Jinja expression; skip unless true")
    timeout: Duration | None = None
    retry: Retry | None = None
    on_error: Literal["stop", "continue"] = "stop"


class WorkflowSpec(StrictModel):
    triggers: list[Trigger] = Field(min_length=1)
    credentials: list[Annotated[str, Field(pattern=IDENTIFIER)]] = Field(
        default_factory=list, description="credential names the steps may use"
    )
    timeout: Duration | None = Field(default=None, description="limit for a whole execution")
    steps: list[Step] = Field(min_length=1)


class Workflow(StrictModel):
    """One automation: a trigger plus steps."""

    api_version: ApiVersion = Field(alias="apiVersion")
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: WorkflowSpec
