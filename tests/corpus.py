"""A corpus of broken repositories: each case changes files of the `repo` fixture and names
the problems validate must report (code, file, line). Add a case here for every new rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from conftest import HELLO, VARIABLES, digest, state_yaml

DEV = "environments/development/workflows/hello.yaml"
STAGING = "environments/staging/workflows/hello.yaml"
PROD = "environments/production/workflows/hello.yaml"
DEV_ENV = "environments/development/environment.yaml"
STAGING_ENV = "environments/staging/environment.yaml"
PROD_ENV = "environments/production/environment.yaml"
PROD_VARS = "environments/production/variables.yaml"


def hello(old: str, new: str) -> str:
    assert old in HELLO, old
    return HELLO.replace(old, new, 1)


@dataclass
class Case:
    name: str
    files: dict[str, str | bytes]
    expect: list[tuple[str, str, int | None]]  # code, path, line (None: any)
    contains: str = ""
    exit_code: int = 1
    remove: list[str] = field(default_factory=list)


BILLION_LAUGHS = "".join(
    f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)

CASES = [
    Case("yaml-syntax", {DEV: hello("  steps:\n", "  steps: [\n")}, [("LG102", DEV, None)]),
    Case(
        "duplicate-key",
        {DEV: hello("  name: hello\n", "  name: hello\n  name: hi\n")},
        [("LG103", DEV, 5)],
        'duplicate key "name"',
    ),
    Case(
        "python-tag",
        {DEV: hello("  name: hello", "  name: !!python/object:os.system x")},
        [("LG104", DEV, 4)],
    ),
    Case(
        "custom-tag",
        {DEV: hello("      path: hello", "      path: !env HOOK")},
        [("LG104", DEV, 8)],
        "tag !env",
    ),
    Case(
        "alias-bomb",
        {
            DEV: hello(
                "  name: hello\n",
                "  name: hello\n  labels:\n    x: &l0 lol\n    y:\n" + BILLION_LAUGHS,
            )
        },
        [("LG105", DEV, None)],
    ),
    Case("empty-file", {DEV: ""}, [("LG106", DEV, 1)]),
    Case("two-documents", {DEV: HELLO + "---\nkind: Workflow\n"}, [("LG107", DEV, None)]),
    Case("top-level-list", {DEV: "- just\n- a list\n"}, [("LG108", DEV, 1)]),
    Case(
        "not-utf8",
        {DEV: HELLO.encode().replace(b"Europe/Berlin", b"Europe/Berl\xefn")},
        [("LG101", DEV, 11)],
    ),
    Case("too-large", {DEV: HELLO + "#" + "x" * (1024 * 1024) + "\n"}, [("LG100", DEV, None)]),
    Case(
        "unknown-key-hint",
        {DEV: hello("  triggers:", "  trigers:")},
        [("LG201", DEV, 6)],
        "did you mean 'triggers'",
    ),
    Case(
        "unknown-trigger-key",
        {DEV: hello("      timezone:", "      timzone:")},
        [("LG201", DEV, 11)],
        "did you mean 'timezone'",
    ),
    Case(
        "wrong-type",
        {DEV: hello("  credentials: [greeter]", "  credentials: greeter")},
        [("LG200", DEV, 12)],
        "spec.credentials: 'greeter' must be a list",
    ),
    Case(
        "wrong-type-of-a-collection",
        {DEV: hello("  name: hello\n", "  name: hello\n  description: [a, b]\n")},
        [("LG200", DEV, 5)],
        "metadata.description: must be a string, not a list",
    ),
    Case(
        "not-one-of-the-choices",
        {DEV: hello("      path: hello", "      path: hello\n      method: FETCH")},
        [("LG200", DEV, 9)],
        "spec.triggers[0].method: 'FETCH' must be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'",
    ),
    Case(
        "out-of-range",
        {DEV: hello("      type: log\n", "      type: log\n      retry: {attempts: 0}\n")},
        [("LG200", DEV, 20)],
        "spec.steps[1].retry.attempts: 0 must be at least 1",
    ),
    Case(
        "step-parameter-of-the-wrong-type",
        {DEV: hello("        message:", "        level: loud\n        message:")},
        [("LG322", DEV, 21)],
        "spec.steps[1].with.level: 'loud' must be 'debug', 'info', 'warning' or 'error'",
    ),
    Case(
        "missing-key",
        {DEV: HELLO[: HELLO.index("  steps:")]},
        [("LG202", DEV, 5)],
        "missing required key 'steps'",
    ),
    Case("wrong-api-version", {DEV: hello("loomgit/v1", "loomgit/v9")}, [("LG203", DEV, 1)]),
    Case("wrong-kind", {DEV: hello("kind: Workflow", "kind: Workflows")}, [("LG203", DEV, 2)]),
    Case(
        "bad-duration",
        {DEV: hello("      type: log\n", "      type: log\n      timeout: soon\n")},
        [("LG200", DEV, 20)],
        "not a duration",
    ),
    Case(
        "dot-segment-path",
        {DEV: hello("      path: hello", "      path: a/../b")},
        [("LG200", DEV, 8)],
    ),
    Case(
        "webhook-path-characters",
        {DEV: hello("      path: hello", "      path: hello?x=1")},
        [("LG200", DEV, 8)],
        "'hello?x=1' must be URL path segments of letters, digits",
    ),
    Case(
        "path-parameter-twice",
        {DEV: hello("      path: hello", "      path: orders/:id/lines/:id")},
        [("LG200", DEV, 8)],
        "the path parameter ':id' is named twice",
    ),
    Case(
        "path-parameter-name",
        {DEV: hello("      path: hello", "      path: orders/:2nd")},
        [("LG200", DEV, 8)],
        "a segment ':name' takes any value",
    ),
    Case(
        "duplicate-webhook-parameters",
        {
            DEV: hello("      path: hello", "      path: orders/:id"),
            "environments/development/workflows/other.yaml": hello(
                "name: hello", "name: other"
            ).replace("      path: hello", "      path: /orders/:number"),
        },
        [("LG302", "environments/development/workflows/other.yaml", 8)],
        "webhook POST /orders/:number is also served by",
    ),
    Case(
        "step-type-case",
        {DEV: hello("      type: log", "      type: Log")},
        [("LG200", DEV, 19)],
        "spec.steps[1].type: 'Log' must be lowercase letters",
    ),
    Case(
        "set-key-not-an-identifier",
        {DEV: hello("        text:", "        2text:")},
        [("LG322", DEV, 17)],
        "'2text' must be letters, digits and '_', not starting with a digit",
    ),
    Case(
        "uppercase-name",
        {DEV: hello("  name: hello", "  name: Hello")},
        [("LG200", DEV, 4)],
        "metadata.name: 'Hello' must be lowercase letters, digits, '-' and '_', at most 63",
    ),
    Case("name-mismatch", {DEV: hello("  name: hello", "  name: hullo")}, [("LG300", DEV, 4)]),
    Case(
        "duplicate-name",
        {DEV.replace(".yaml", ".yml"): HELLO},
        [("LG301", DEV.replace(".yaml", ".yml"), 1)],
    ),
    Case(
        "duplicate-webhook",
        {"environments/development/workflows/other.yaml": hello("name: hello", "name: other")},
        [("LG302", "environments/development/workflows/other.yaml", 8)],
        "POST /hello",
    ),
    Case(
        "webhook-declared-twice-in-one-workflow",
        {
            DEV: hello(
                "    - type: schedule\n",
                "    - type: webhook\n      path: /hello\n    - type: schedule\n",
            )
        },
        [("LG302", DEV, 10)],
        "webhook POST /hello is also served by spec.triggers[0] of this workflow",
    ),
    Case(
        "webhook-parameters-renamed-in-one-workflow",
        {
            DEV: hello("      path: hello", "      path: orders/:id").replace(
                "    - type: schedule\n",
                "    - type: webhook\n      path: orders/:number\n    - type: schedule\n",
            )
        },
        [("LG302", DEV, 10)],
        "webhook POST /orders/:number is also served by spec.triggers[0]",
    ),
    Case("bad-cron", {DEV: hello("0 9 * * 1-5", "0 25 * * *")}, [("LG310", DEV, 10)]),
    Case("never-fires", {DEV: hello("0 9 * * 1-5", "0 0 30 2 *")}, [("LG311", DEV, 10)]),
    Case("bad-timezone", {DEV: hello("Europe/Berlin", "Europe/Atlantis")}, [("LG312", DEV, 11)]),
    Case(
        "timezone-misspelt",
        {DEV: hello("Europe/Berlin", "Europe/Berlni")},
        [("LG312", DEV, 11)],
        "unknown time zone 'Europe/Berlni' (did you mean 'Europe/Berlin'?)",
    ),
    Case(  # a case-insensitive file system loads it; the daemon on Linux would not
        "timezone-in-lower-case",
        {DEV: hello("Europe/Berlin", "america/new_york")},
        [("LG312", DEV, 11)],
        "names are case-sensitive: America/New_York",
    ),
    Case(  # the system's leap-second zones are not on every machine
        "timezone-system-only",
        {DEV: hello("Europe/Berlin", "right/UTC")},
        [("LG312", DEV, 11)],
    ),
    Case(
        "undeclared-signature-credential",
        {
            DEV: hello(
                "      path: hello\n", "      path: hello\n      signature: {credential: shop}\n"
            )
        },
        [("LG313", DEV, 9)],
        "'shop'",
    ),
    Case(
        "undeclared-auth-credential",
        {
            DEV: hello(
                "      path: hello\n", "      path: hello\n      auth: {credential: alerting}\n"
            )
        },
        [("LG313", DEV, 9)],
        "the auth's credential 'alerting' is not declared",
    ),
    Case(
        "auth-header-name",
        {
            DEV: hello(
                "      path: hello\n",
                "      path: hello\n      auth: {credential: greeter, header: 'X Api Key'}\n",
            )
        },
        [("LG200", DEV, 9)],
        "an HTTP header name",
    ),
    Case(
        "basic-auth-in-another-header",
        {
            DEV: hello(
                "      path: hello\n",
                "      path: hello\n      auth:\n        credential: greeter\n"
                "        header: X-Api-Key\n        scheme: basic\n",
            )
        },
        [("LG200", DEV, 12)],
        "scheme basic is sent in the Authorization header, not X-Api-Key",
    ),
    Case(
        "duplicate-step-id", {DEV: hello("    - id: say", "    - id: greet")}, [("LG320", DEV, 18)]
    ),
    Case(
        "unknown-step-type",
        {DEV: hello("      type: log", "      type: logg")},
        [("LG321", DEV, 19)],
        "did you mean 'log'",
    ),
    Case(
        "bad-step-params",
        {DEV: hello("        message:", "        mesage:")},
        [("LG322", DEV, 21)],
        "unknown key 'mesage'",
    ),
    Case(
        "template-syntax",
        {DEV: hello("{{ steps.greet.output.text }}", "{{ steps.greet. }}")},
        [("LG330", DEV, 21)],
    ),
    Case(
        "unknown-filter",
        {DEV: hello("{{ steps.greet.output.text }}", "{{ steps.greet.output.text | b64encode }}")},
        [("LG330", DEV, 21)],
        "No filter named 'b64encode'",
    ),
    Case(
        "unknown-test",
        {DEV: hello("      type: log\n", "      type: log\n      when: trigger.body is fancy\n")},
        [("LG330", DEV, 20)],
        "No test named 'fancy'",
    ),
    Case(
        "later-step",
        {DEV: hello("{{ trigger.body.name }}", "{{ steps.say.output }}")},
        [("LG331", DEV, 17)],
        "does not run before",
    ),
    Case(
        "undeclared-credential",
        {DEV: hello("{{ trigger.body.name }}", "{{ credentials.stripe.key }}")},
        [("LG331", DEV, 17)],
        "credential 'stripe' is not declared",
    ),
    Case(
        "unknown-trigger-field",
        {DEV: hello("{{ trigger.body.name }}", "{{ trigger.bdy.name }}")},
        [("LG331", DEV, 17)],
        "the trigger has no 'bdy' (did you mean 'body'?); it has type, body, headers, query, "
        "params, scheduled_time",
    ),
    Case(
        "unknown-trigger-field-in-when",
        {DEV: hello("      type: log\n", "      type: log\n      when: trigger['heders']\n")},
        [("LG331", DEV, 20)],
        "the trigger has no 'heders' (did you mean 'headers'?)",
    ),
    Case(
        "unknown-step-field",
        {DEV: hello('"{{ steps.greet.output.text }}"', '"{{ steps.greet.outptu.text }}"')},
        [("LG331", DEV, 21)],
        "step 'greet' has no 'outptu' (did you mean 'output'?); a step has output, status, error",
    ),
    Case(
        "set-output-key",
        {DEV: hello('"{{ steps.greet.output.text }}"', '"{{ steps.greet.output.txt }}"')},
        [("LG331", DEV, 21)],
        "the output of step 'greet' (set) has no 'txt' (did you mean 'text'?); it has text",
    ),
    Case(  # n8n's Set node nests its fields under `values`; loomgit's sets them directly
        "set-output-key-nested",
        {
            DEV: hello(
                '        text: "{{ vars.greeting }}',
                '        values:\n          text: "{{ vars.greeting }}',
            )
        },
        [("LG331", DEV, 22)],
        "the output of step 'greet' (set) has no 'text'; it has values",
    ),
    Case(
        "http-output-body",
        {
            DEV: hello(
                "    - id: say\n",
                "    - id: fetch\n      type: http\n      with: {url: 'https://example.com'}\n"
                "    - id: say\n",
            ).replace("steps.greet.output.text", "steps.fetch.output.body.text")
        },
        [("LG331", DEV, 24)],
        "the output of step 'fetch' (http) has no 'body'; it has status, headers, and json "
        "(an answer in JSON) or text",
    ),
    Case(
        "output-key-in-jmespath",
        {
            DEV: hello(
                '      type: log\n      with:\n        message: "{{ steps.greet.output.text }}"',
                "      type: transform\n      with:\n        expression: steps.greet.output.tetx",
            )
        },
        [("LG331", DEV, 21)],
        "the output of step 'greet' (set) has no 'tetx' (did you mean 'text'?)",
    ),
    Case(
        "unknown-workflow-field",
        {DEV: hello("{{ trigger.body.name }}", "{{ workflow.verison }}")},
        [("LG331", DEV, 17)],
        "the workflow has no 'verison' (did you mean 'version'?); it has name, version",
    ),
    Case(
        "unknown-root",
        {DEV: hello("{{ trigger.body.name }}", "{{ secrets.x }}")},
        [("LG331", DEV, 17)],
        "'secrets' is not in the template context",
    ),
    Case(
        "bad-when",
        {DEV: hello("      type: log\n", "      type: log\n      when: x ==\n")},
        [("LG330", DEV, 20)],
    ),
    Case(
        "bad-jmespath",
        {
            DEV: hello(
                "      type: log\n      with:\n        message:",
                "      type: transform\n      with:\n        expression:",
            ).replace(
                '"{{ steps.greet.output.text }}"',
                '"steps.greet[?"',
            )
        },
        [("LG332", DEV, 21)],
        "invalid JMESPath expression: it ends too early (at character 14)",
    ),
    Case(
        "bad-jmespath-token",
        {
            DEV: hello(
                "      type: log\n      with:\n        message:",
                "      type: transform\n      with:\n        expression:",
            ).replace(
                '"{{ steps.greet.output.text }}"',
                '"steps.greet[?status==]"',
            )
        },
        [("LG332", DEV, 21)],
        "invalid JMESPath expression: unexpected ']' (at character 22)",
    ),
    Case(
        "variable-missing-in-production",
        {PROD_VARS: VARIABLES.replace("  greeting: Hello\n", "  other: 1\n")},
        [("LG340", PROD, 17)],
        "vars.greeting is not defined",
    ),
    Case(
        "listed-but-missing",
        {DEV_ENV: state_yaml("development", {"ghost": {"active": "true"}})},
        [("LG400", DEV_ENV, 5)],
        "no workflows/ghost.yaml; to delete it, remove it from this list too",
    ),
    Case(
        "hand-edit-in-staging",
        {STAGING: hello("message:", "level: warning\n        message:")},
        [("LG401", STAGING, 21)],  # the first line the edit changed
        "edit development and promote",
    ),
    Case(
        "version-skips-staging",
        {
            PROD_ENV: state_yaml(
                "production", {"hello": {"version": 2, "active": "false", "digest": digest(HELLO)}}
            )
        },
        [("LG402", PROD_ENV, 6)],
        "staging never had v2",
    ),
    Case("no-promotion-record", {STAGING_ENV: state_yaml("staging", {})}, [("LG403", STAGING, 1)]),
    Case(
        "record-without-digest",
        {STAGING_ENV: state_yaml("staging", {"hello": {"version": 1}})},
        [("LG404", STAGING_ENV, 5)],
        "no digest",
    ),
    Case(
        "environment-of-another",
        {STAGING_ENV: state_yaml("production", {"hello": {"version": 1, "digest": digest(HELLO)}})},
        [("LG404", STAGING_ENV, 3)],
    ),
    Case(
        "undeclared-environment-folder",
        {"environments/qa/variables.yaml": VARIABLES},
        [("LG501", "environments/qa", None)],
    ),
    Case(
        "missing-environment-folder",
        {},
        [("LG502", "environments/production", None)],
        remove=["environments/production"],
    ),
    Case(
        "config-unknown-key",
        {"loomgit.yaml": "apiVersion: loomgit/v1\nkind: Repository\nenvironmnets: [a]\n"},
        [],
        "did you mean 'environments'",
        exit_code=2,
    ),
    Case(
        "config-duplicate-env",
        {"loomgit.yaml": "apiVersion: loomgit/v1\nkind: Repository\nenvironments: [a, a]\n"},
        [],
        "listed twice",
        exit_code=2,
    ),
]


def _plain_credentials() -> str:
    return "greeter:\n  token: hunter2\n"


CREDENTIAL_CASES = [
    Case(
        "credential-not-declared-anywhere",
        {DEV: hello("credentials: [greeter]", "credentials: [greeter, stripe]")},
        [("LG700", DEV, 12)],
        "credential 'stripe' is not defined for development, scoped or global; add it with "
        "`loomgit credentials set stripe --env development`",
    ),
    Case(
        "credential-name-misspelt",
        {DEV: hello("credentials: [greeter]", "credentials: [greter]")},
        [("LG700", DEV, 12)],
        "credential 'greter' is not defined for development, scoped or global; did you mean "
        "'greeter'?",
    ),
    Case(
        "credential-field-missing",
        {DEV: hello("{{ trigger.body.name }}", "{{ credentials.greeter.secret }}")},
        [("LG701", DEV, 17)],
        "has no field 'secret'",
    ),
    Case(
        "signature-field-missing",
        {
            DEV: hello(
                "      path: hello\n",
                "      path: hello\n      signature:\n        credential: greeter\n"
                "        field: secret\n",
            )
        },
        [("LG701", DEV, 11)],
        "has no field 'secret'",
    ),
    Case(
        "signature-default-field-missing",  # the default field, `secret`, at the mapping
        {
            DEV: hello(
                "      path: hello\n", "      path: hello\n      signature: {credential: greeter}\n"
            )
        },
        [("LG701", DEV, 9)],
        "has no field 'secret'",
    ),
    Case(
        "auth-field-missing",
        {
            DEV: hello(
                "      path: hello\n",
                "      path: hello\n      auth:\n        credential: greeter\n"
                "        field: secret\n        header: X-Api-Key\n",
            )
        },
        [("LG701", DEV, 11)],
        "has no field 'secret'",
    ),
    Case(
        "basic-auth-fields-missing",  # the defaults: at the auth mapping, user name first
        {
            DEV: hello(
                "      path: hello\n",
                "      path: hello\n      auth: {credential: greeter, scheme: basic}\n",
            )
        },
        [("LG701", DEV, 9), ("LG701", DEV, 9)],
        "has no field 'user'",
    ),
    Case(
        "plaintext-credentials",
        {"credentials.sops.yaml": _plain_credentials()},
        [("LG703", "credentials.sops.yaml", 1)],
        "plain text",
    ),
    Case(
        "plaintext-secrets-file-in-an-environment",
        {"environments/staging/Secrets.YML": "db:\n  password: x\n"},
        [("LG703", "environments/staging/Secrets.YML", 1)],
    ),
    Case(
        "scoped-only-from-global",
        {
            "loomgit.yaml": "apiVersion: loomgit/v1\nkind: Repository\nscoped_only: [greeter]\n"
            "environments: [development, staging, production]\n"
        },
        [("LG700", DEV, 12), ("LG706", "credentials.sops.yaml", 1)],
        "scoped_only",
    ),
    Case(
        "no-sops-rule",
        {".sops.yaml": "creation_rules: []\n"},
        [("LG707", "credentials.sops.yaml", 1)],
    ),
    Case(
        "kms-key-group",
        {".sops.yaml": "creation_rules:\n  - path_regex: x\n    kms: arn:aws:kms:eu:1:key/x\n"},
        [("LG705", ".sops.yaml", 3)],
        "age recipients only",
    ),
]
CASES += CREDENTIAL_CASES
