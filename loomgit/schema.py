"""JSON Schemas generated from the models, one per document kind, for editors and CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loomgit.errors import UsageError
from loomgit.models import DOCUMENT_KINDS
from loomgit.models.steps import BUILTIN_STEPS
from loomgit.wording import PATTERN_WORDS

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _with_step_params(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds each built-in step type's parameter schema under `with`, keyed on `type`."""
    defs = schema.setdefault("$defs", {})
    conditions = []
    for name, model in sorted(BUILTIN_STEPS.items()):
        sub = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        def_name = f"{model.__name__}"
        defs[def_name] = _templates_allowed(sub)
        conditions.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/{def_name}"}}},
            }
        )
    defs["Step"]["allOf"] = conditions
    return schema


# A parameter may be given as a template, which the step checks once rendered (validate
# leaves it to run time too): `status: "{{ trigger.body.code }}"`.
_TEMPLATE = {
    "type": "string",
    "pattern": r"\{[{%#]",
    "description": "a template, checked once rendered",
}
_KEPT = ("title", "description", "default")


def _templates_allowed(params: dict[str, Any]) -> dict[str, Any]:
    """Lets each parameter that does not already take any string be a template as well,
    and so each item of a list parameter (`expect_status: [200, "{{ vars.also }}"]`)."""
    for name, prop in params.get("properties", {}).items():
        params["properties"][name] = _or_template(prop)
    return params


def _or_template(prop: dict[str, Any]) -> dict[str, Any]:
    rule = {k: v for k, v in prop.items() if k not in _KEPT}
    choices = rule["anyOf"] if list(rule) == ["anyOf"] else [rule]
    if not rule or any(_any_string(c) for c in choices):
        return prop
    for choice in choices:
        if choice.get("type") == "array" and isinstance(choice.get("items"), dict):
            choice["items"] = _or_template(choice["items"])
    return {**{k: prop[k] for k in _KEPT if k in prop}, "anyOf": [*choices, _TEMPLATE]}


def _any_string(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" and not {"enum", "const", "pattern"} & node.keys()


def _explained(node: Any) -> None:
    """Gives each `pattern` the words validate uses, as `patternErrorMessage`, which
    editors (the YAML and JSON language servers of VS Code and others) show in place
    of the regular expression."""
    if isinstance(node, dict):
        words = PATTERN_WORDS.get(node.get("pattern", ""))
        if words:
            node["patternErrorMessage"] = f"must be {words}"
        for value in node.values():
            _explained(value)
    elif isinstance(node, list):
        for value in node:
            _explained(value)


def generate() -> dict[str, dict[str, Any]]:
    """File name -> schema for every document kind."""
    out = {}
    for kind, model in DOCUMENT_KINDS.items():
        schema = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        if kind == "workflow":
            schema = _with_step_params(schema)
        _explained(schema)
        out[f"{kind}.schema.json"] = {"$schema": DRAFT, **schema}
    return out


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    """Writes every schema into `folder`; returns the files written."""
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, schema in generate().items():
            path = folder / name
            path.write_text(dumps(schema), encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise UsageError(
            f"cannot write the schemas into {folder}: {exc.strerror or exc}",
            hint="--write takes a folder you can write to",
        ) from None
    return written
