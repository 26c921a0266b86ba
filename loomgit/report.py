"""Renders validation reports as text, JSON or GitHub workflow commands."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from loomgit.errors import LoomgitError
from loomgit.problems import Problem
from loomgit.validate import Report, to_json


def _gh_escape(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def github(problem: Problem) -> str:
    """A workflow command that GitHub shows as an annotation on the pull request."""
    props = []
    if problem.path and ":" not in problem.path:
        props.append(f"file={_gh_escape(problem.path, prop=True)}")
        if problem.line is not None:
            props.append(f"line={problem.line}")
            props.append(f"col={problem.col or 1}")
    props.append(f"title={problem.code}")
    where = "" if problem.path and ":" not in problem.path else f"{problem.location()}: "
    return f"::{problem.severity} {','.join(props)}::{_gh_escape(where + problem.message)}"


@contextlib.contextmanager
def annotated(fmt: str) -> Iterator[None]:
    """With the github format, an error that stops the check before any report (a shallow
    clone, an unknown --base) is an annotation too: the pull request shows why it failed."""
    try:
        yield
    except LoomgitError as exc:
        if fmt == "github":
            print(f"::error title=loomgit::{_gh_escape(exc.explained())}", flush=True)
        raise


def summary(report: Report) -> str:
    envs = len(report.environments)
    scope = (
        f"{report.workflows} workflow file{'s' * (report.workflows != 1)} in {envs} "
        f"environment{'s' * (envs != 1)} ({report.source})"
    )
    if not report.validated:  # check-promotion --no-validate: the commits only
        if not report.problems:
            return f"ok: {report.source}: every change is legal (HEAD not validated here)"
        scope = f"{report.source} (HEAD not validated here: --no-validate)"
    elif not report.problems:
        return f"ok: {scope} valid"
    errors = len(report.errors)
    warnings = len(report.problems) - errors
    parts = [f"{errors} error{'s' * (errors != 1)}"]
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return f"{', '.join(parts)}; checked {scope}"


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(to_json(report), indent=2)
    commits = [f"  {line}" for line in report.commits]
    if fmt == "github":
        lines = [github(p) for p in report.problems]
        return "\n".join([*lines, *commits, summary(report)])
    return "\n".join([*(p.render() for p in report.problems), *commits, summary(report)])
