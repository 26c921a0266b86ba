"""`loomgit.yaml`: the repository's layout and its ordered pipeline of environments."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from loomgit.models.base import ApiVersion, EnvName, StrictModel
from loomgit.wording import pattern

Layout = Literal["directories", "branches"]
BRANCH = pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
    "a branch name: letters, digits, '.', '_', '/' and '-', starting with a letter or digit",
)


class EnvironmentDecl(StrictModel):
    """One stage of the pipeline."""

    name: EnvName
    branch: str | None = Field(
        default=None,
        description="branch layout only: the branch holding this environment (default env/<name>)",
        pattern=BRANCH,
    )
    description: str = ""
    allow_empty: bool = Field(
        default=False,
        description="let the daemon apply a commit that leaves this environment with no "
        "workflows (refused by default, as a likely mistake)",
    )

    @field_validator("branch")
    @classmethod
    def _valid_ref(cls, branch: str | None) -> str | None:
        if branch and (".." in branch or "//" in branch or branch.endswith(("/", ".lock", "."))):
            raise ValueError(f"'{branch}' is not a valid branch name")
        return branch

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `- development` is accepted as shorthand for `- name: development`.
        return {"name": value} if isinstance(value, str) else value


class Repository(StrictModel):
    """The root document of a loomgit repository."""

    api_version: ApiVersion = Field(alias="apiVersion")
    kind: Literal["Repository"]
    layout: Layout = "directories"
    scoped_only: list[str] = Field(
        default_factory=list,
        description="credentials that must be scoped to each environment, never global",
    )
    environments: list[EnvironmentDecl] = Field(
        min_length=1,
        description="pipeline order; the first is edited by hand, the last is the "
        "default for API-triggered runs",
    )

    @field_validator("environments")
    @classmethod
    def _unique(cls, envs: list[EnvironmentDecl]) -> list[EnvironmentDecl]:
        seen: set[str] = set()
        for env in envs:
            if env.name in seen:
                raise ValueError(f"environment '{env.name}' is listed twice")
            seen.add(env.name)
        branches = [e.branch for e in envs if e.branch]
        if len(set(branches)) != len(branches):
            raise ValueError("two environments name the same branch")
        return envs

    @model_validator(mode="after")
    def _branches_only_in_branch_layout(self) -> Repository:
        if self.layout == "directories" and any(e.branch for e in self.environments):
            raise ValueError("'branch' is only used with 'layout: branches'")
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.environments]

    @property
    def first(self) -> str:
        return self.environments[0].name

    def index(self, env: str) -> int:
        return self.names.index(env)

    def branch_of(self, env: str) -> str:
        decl = self.environments[self.index(env)]
        return decl.branch or f"env/{decl.name}"
