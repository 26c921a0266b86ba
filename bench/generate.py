"""Generates a large loomgit repository for the benchmarks, through `git fast-import`.

10,000 workflows in development, 8,000 of them promoted to staging and 6,000 to
production (identical blobs, as real promotions make them), behind a few hundred commits
of edit history.

    python bench/generate.py OUT_DIR [--workflows 10000] [--history 300]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = b"""apiVersion: loomgit/v1
kind: Repository
layout: directories
environments: [development, staging, production]
"""

VARIABLES = b"""apiVersion: loomgit/v1
kind: Variables
variables:
  shop_url: https://shop.example.com
  warehouse_url: https://wms.example.net
  crm_url: https://crm.example.org
  threshold: 90
"""


def workflow(i: int, revision: int) -> bytes:
    """A realistic, distinct workflow: webhook or schedule, three to six steps."""
    rng = random.Random(i)
    name = f"wf-{i:05d}"
    if i % 3 == 0:
        trigger = (
            f'    - type: schedule\n      cron: "{i % 60} {i % 24} * * 1-5"\n'
            f"      timezone: Europe/Berlin\n"
        )
    else:
        trigger = f"    - type: webhook\n      path: hooks/{name}\n      method: POST\n"
    steps = [
        f"""    - id: fetch
      type: http
      with:
        url: "{{{{ vars.shop_url }}}}/orders/{i}?page={{{{ trigger.body.page }}}}"
        headers: {{Authorization: "Bearer {{{{ credentials.shop_api.token }}}}"}}
        timeout: 10s
      retry: {{attempts: 3, backoff: 1s}}
""",
        f"""    - id: pick
      type: transform
      with: {{expression: "steps.fetch.output.json.items[?qty > `{i % 7}`]"}}
""",
        f"""    - id: shape
      type: set
      with:
        count: "{{{{ steps.pick.output | length }}}}"
        label: "batch-{i}-{{{{ env }}}}"
""",
    ]
    if rng.random() < 0.6:
        steps.append(f"""    - id: push
      type: http
      when: steps.shape.output.count != '0'
      with:
        method: POST
        url: "{{{{ vars.warehouse_url }}}}/inbound/{name}"
        json: {{items: "{{{{ steps.pick.output }}}}", ref: "{{{{ steps.shape.output.label }}}}"}}
        expect_status: [200, 201]
      on_error: continue
""")
    if rng.random() < 0.5:
        steps.append(f"""    - id: note
      type: log
      with: {{message: "{name} handled {{{{ steps.shape.output.count }}}} items", level: info}}
""")
    steps.append("""    - id: reply
      type: respond
      with: {status: 202, body: {ok: true}}
""")
    return (
        f"""apiVersion: loomgit/v1
kind: Workflow
metadata:
  name: {name}
  description: Generated workflow {i}, revision {revision}
  labels: {{team: team-{i % 40}}}
spec:
  triggers:
{trigger}  credentials: [shop_api]
  steps:
{"".join(steps)}"""
    ).encode()


def _credentials(key_file: Path | None = None) -> dict[str, bytes]:
    """`.sops.yaml` and the global credentials file, for a throwaway key made here. The
    key is kept only if `key_file` (outside the repository) is given."""
    from pyrage import x25519

    from loomgit import sops

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    if key_file is not None:
        key_file.write_text(f"# throwaway benchmark key\n{identity}\n")
        key_file.chmod(0o600)
    rule = f"creation_rules:\n  - path_regex: credentials\\.sops\\.yaml$\n    age: {recipient}\n"
    shared = sops.encrypt({"shop_api": {"token": "bench"}}, [recipient], what="bench")
    return {".sops.yaml": rule.encode(), "credentials.sops.yaml": shared}


def _blob(out: list[bytes], data: bytes) -> None:
    out.append(b"data %d\n" % len(data))
    out.append(data)
    out.append(b"\n")


def _commit(out: list[bytes], n: int, message: str, files: dict[str, bytes]) -> None:
    # Commits to the same branch in one fast-import stream chain by themselves.
    out.append(b"commit refs/heads/main\n")
    out.append(b"committer Bench <bench@example.com> %d +0000\n" % (1_760_000_000 + n * 60))
    _blob(out, message.encode())
    for path, data in files.items():
        out.append(f"M 100644 inline {path}\n".encode())
        _blob(out, data)


def _state(env: str, names: list[str], contents: dict[str, bytes], source: str) -> bytes:
    lines = ["apiVersion: loomgit/v1", "kind: Environment", f"environment: {env}", "workflows:"]
    for name in names:
        dig = hashlib.sha256(contents[name]).hexdigest()
        lines += [
            f"  {name}:",
            "    version: 1",
            "    active: true",
            f"    digest: sha256:{dig}",
            f"    promoted_from: {source}",
        ]
    return ("\n".join(lines) + "\n").encode()


def generate(target: Path, count: int, history: int, key_file: Path | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(target)], check=True)
    revision = {i: 0 for i in range(count)}
    base = "environments/development/workflows/"
    out: list[bytes] = []
    files = {"loomgit.yaml": CONFIG, **_credentials(key_file)}
    for env in ("development", "staging", "production"):
        files[f"environments/{env}/variables.yaml"] = VARIABLES
    files.update({f"{base}wf-{i:05d}.yaml": workflow(i, 0) for i in range(count)})
    _commit(out, 0, "add workflows", files)
    rng = random.Random(7)
    for n in range(1, history + 1):
        changed = {}
        for i in rng.sample(range(count), rng.randint(1, 5)):
            revision[i] += 1
            changed[f"{base}wf-{i:05d}.yaml"] = workflow(i, revision[i])
        _commit(out, n, f"edit {len(changed)} workflows", changed)
    contents = {f"wf-{i:05d}": workflow(i, revision[i]) for i in range(count)}
    names = sorted(contents)
    staged, live = names[: count * 8 // 10], names[: count * 6 // 10]
    promo: dict[str, bytes] = {}
    for env, chosen, source in (
        ("staging", staged, "development"),
        ("production", live, "staging"),
    ):
        promo.update({f"environments/{env}/workflows/{n}.yaml": contents[n] for n in chosen})
        promo[f"environments/{env}/environment.yaml"] = _state(env, chosen, contents, source)
    promo["environments/development/environment.yaml"] = (
        b"apiVersion: loomgit/v1\nkind: Environment\nenvironment: development\nworkflows: {}\n"
    )
    _commit(out, history + 1, "promote", promo)
    out.append(b"done\n")
    subprocess.run(
        ["git", "fast-import", "--quiet", "--done"], cwd=target, input=b"".join(out), check=True
    )
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=target, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=300)
    args = parser.parse_args()
    generate(args.out, args.workflows, args.history)
    print(f"generated {args.out}: {args.workflows} workflows, {args.history + 2} commits")


if __name__ == "__main__":
    main()


def prepare(repo: Path | None, count: int, history: int) -> tuple[Path, Path | None]:
    """A benchmark repository: `repo` if it is one already, else a new one. Returns it and
    the scratch folder to remove afterwards (None when the caller's repository is used)."""
    if repo is not None and (repo / ".git").exists():
        return repo, None
    scratch = Path(tempfile.mkdtemp(prefix="loomgit-bench-"))
    target = repo or scratch / "repo"
    start = time.perf_counter()
    generate(target, count, history)
    print(
        f"generated {count} workflows, {history + 2} commits in {time.perf_counter() - start:.1f} s"
    )
    return target, scratch
