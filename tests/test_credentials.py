"""Credentials with the real sops binary and throwaway age keys: encryption, the keyless
checks, the commands, promotion with credentials, and a canary that must never leak."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Repo, Result, commit_all, git, make_key
from pyrage import passphrase, x25519

from loomgit import sops

CANARY = "LOOMGIT-CANARY-7f3a9c"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, AgeKey]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {e: make_key(folder, e) for e in ("development", "staging", "production")}


@pytest.fixture
def creds_repo(
    repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> Repo:
    """The `repo` fixture with its own key per environment, made through loomgit itself."""
    (repo.path / ".sops.yaml").unlink()
    (repo.path / "credentials.sops.yaml").unlink()
    git(repo.path, "commit", "-qam", "start over with credentials")
    for env, key in keys.items():
        assert (
            cli("keys", "add", "--env", env, "--recipient", key.recipient, "--repo", repo.path).code
            == 0
        )
    fields = tmp_path / "greeter.json"
    fields.write_text(json.dumps({"token": CANARY}))
    assert (
        cli(
            "credentials", "set", "greeter", "--global", "--from-json", fields, "--repo", repo.path
        ).code
        == 0
    )
    return repo


def _set_in(cli: Callable[..., Result], repo: Repo, name: str, env: str, *extra: object) -> None:
    """`credentials set NAME --env ENV` with `extra` (the fields file, keys), which succeeds."""
    result = cli("credentials", "set", name, "--env", env, *extra, "--repo", repo.path)
    assert result.code == 0, result.err


def _key_args(keys: dict[str, AgeKey], *envs: str) -> list[str]:
    out: list[str] = []
    for env in envs:
        out += ["--age-key-file", f"{env}={keys[env].path}"]
    return out


# -- the sops module -------------------------------------------------------------------


def test_round_trip_and_failures(keys: dict[str, AgeKey]) -> None:
    data = sops.encrypt({"api": {"token": CANARY}}, [keys["staging"].recipient], what="f")
    assert CANARY.encode() not in data
    plain = sops.decrypt(data, keys["staging"].path, what="f", env="staging")
    assert plain["api"]["token"].get_secret_value() == CANARY
    # Decrypted values redact themselves wherever they end up.
    for shown in (
        str(plain),
        repr(plain),
        f"{plain['api']['token']}",
        json.dumps(plain, default=str),
    ):
        assert CANARY not in shown and "**********" in shown
    again = sops.encrypt(plain, [keys["staging"].recipient], what="f")
    assert sops.decrypt(again, keys["staging"].path, what="f", env="staging") == plain
    with pytest.raises(sops.KeyMissing) as wrong:
        sops.decrypt(data, keys["production"].path, what="f", env="production")
    tampered = data.replace(b"data:", b"data:AAAA", 1)
    with pytest.raises(sops.Tampered) as bad:
        sops.decrypt(tampered, keys["staging"].path, what="f", env="staging")
    with pytest.raises(sops.KeyMissing) as none:
        sops.decrypt(data, None, what="f", env="staging")
    for exc in (wrong.value, bad.value, none.value):
        assert CANARY not in str(exc) + str(exc.hint)
    assert "LOOMGIT_AGE_KEY_FILE_STAGING" in str(none.value.hint)


def test_key_files_readable_by_others_are_refused(keys: dict[str, AgeKey]) -> None:
    path = keys["staging"].path
    path.chmod(0o644)
    with pytest.raises(sops.KeyMissing, match="can be read by other users"):
        sops.check_key_file(path, "staging")
    path.chmod(0o600)
    assert sops.check_key_file(path, "staging") == path


def test_key_files_sops_could_not_use_are_refused(tmp_path: Path) -> None:
    """Each would have made every decryption fail with "cannot decrypt"; none is quoted."""
    identity = x25519.Identity.generate()
    secret = str(identity)
    cases = {
        "comments only": (b"# created: today\n\n", "holds no age identity"),
        "public key": (f"{identity.to_public()}\n".encode(), "line 1 is a public key"),
        "truncated": (f"# mine\n{secret[:40]}\n".encode(), "line 2 is not an age identity"),
        "not text": (b"\xff\xfe" + secret.encode(), "is not an age identity file"),
        "passphrase": (passphrase.encrypt(secret.encode(), "pw"), "encrypted with a passphrase"),
        "too large": (b"#" * 70_000, "larger than 64 KiB"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        with pytest.raises(sops.KeyFileUnusable, match=expected) as refused:
            sops.check_key_file(path, "staging")
        assert secret[15:] not in str(refused.value) + str(refused.value.hint), name
        assert refused.value.exit_code == 2
    good = tmp_path / "good"
    good.write_text(f"# throwaway test key\r\n\n  {secret}  \r\n")
    good.chmod(0o600)
    assert sops.check_key_file(good, "staging") == good


# -- keyless checks --------------------------------------------------------------------


def test_extra_recipient_is_caught(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    intruder = make_key(tmp_path, "intruder")
    recipients = [k.recipient for k in keys.values()] + [intruder.recipient]
    creds_repo.write(
        "credentials.sops.yaml", sops.encrypt({"greeter": {"token": "x"}}, recipients, what="x")
    )
    result = cli("validate", "--repo", creds_repo.path)
    assert result.code == 1 and "error[LG704]" in result.out
    assert intruder.recipient in result.out


def test_adding_a_key_the_rules_have_but_the_file_lacks_mends_the_file(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result]
) -> None:
    """`.sops.yaml` gives production's key, the file was encrypted without it: adding
    that key is not a no-op, it re-encrypts the file for every recipient."""
    short = [keys["development"].recipient, keys["staging"].recipient]
    creds_repo.write(
        "credentials.sops.yaml", sops.encrypt({"greeter": {"token": "x"}}, short, what="x")
    )
    git(creds_repo.path, "commit", "-qam", "encrypted for two of three")
    assert cli("validate", "--repo", creds_repo.path).code == 1
    added = cli(
        "keys", "add", "--env", "production", "--recipient", keys["production"].recipient,
        "--repo", creds_repo.path, *_key_args(keys, "development"),
    )  # fmt: skip
    assert added.code == 0 and added.out.startswith("added "), added.err
    assert cli("validate", "--repo", creds_repo.path).code == 0


def test_credentials_list_needs_no_key(creds_repo: Repo, cli: Callable[..., Result]) -> None:
    rows = json.loads(cli("credentials", "list", "--format", "json", "--repo", creds_repo.path).out)
    assert rows == [
        {
            "name": "greeter",
            "scope": "global",
            "fields": ["token"],
            "resolves_in": ["development", "staging", "production"],
        }
    ]
    text = cli("credentials", "list", "--repo", creds_repo.path).out
    assert " ".join(text.split()) == (
        "greeter global fields: token resolves in: development, staging, production"
    )
    assert cli("validate", "--repo", creds_repo.path).code == 0


# -- commands --------------------------------------------------------------------------


def test_scoped_set_copy_and_remove(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    fields = tmp_path / "f.json"
    fields.write_text(json.dumps({"token": CANARY + "-staging"}))
    _set_in(cli, creds_repo, "greeter", "staging", "--from-json", fields)
    scoped = creds_repo.path / "environments/staging/credentials.sops.yaml"
    assert (
        sops.decrypt(scoped.read_bytes(), keys["staging"].path, what="s", env="staging")["greeter"][
            "token"
        ].get_secret_value()
        == CANARY + "-staging"
    )
    with pytest.raises(sops.KeyMissing):  # production's key cannot read staging's secrets
        sops.decrypt(scoped.read_bytes(), keys["production"].path, what="s", env="production")
    result = cli(
        "credentials",
        "copy",
        "greeter",
        "--from",
        "staging",
        "--to",
        "production",
        *_key_args(keys, "staging"),
        "--repo",
        creds_repo.path,
    )
    assert result.code == 0, result.err
    copied = (creds_repo.path / "environments/production/credentials.sops.yaml").read_bytes()
    assert (
        sops.decrypt(copied, keys["production"].path, what="p", env="production")["greeter"][
            "token"
        ].get_secret_value()
        == CANARY + "-staging"
    )
    assert (
        cli(
            "credentials",
            "rm",
            "greeter",
            "--env",
            "staging",
            *_key_args(keys, "staging"),
            "--repo",
            creds_repo.path,
        ).code
        == 0
    )
    assert not scoped.exists()
    assert cli("validate", "--repo", creds_repo.path).code == 0
    # A name that does not resolve where it is copied from: the closest, or those there are.
    copy = ("credentials", "copy", "--from", "staging", "--to", "production")
    for name, hint in (("greter", "did you mean greeter?"), ("mailer", "staging has greeter")):
        result = cli(*copy[:2], name, *copy[2:], *_key_args(keys, "staging", "production"),
                     "--repo", creds_repo.path)  # fmt: skip
        assert (result.code, result.err) == (
            1,
            f"error: credential {name} does not resolve in staging\nhint: {hint}\n",
        )
    assert git(creds_repo.path, "status", "--porcelain") == ""
    # The history lists them, each under the environment it concerns (global: all).
    history = cli("history", "--env", "staging", "--format", "json", "--repo", creds_repo.path)
    assert [(e["kind"], e["details"]) for e in json.loads(history.out)][:4] == [
        ("credential", ["Credential: staging greeter removed"]),
        ("credential", ["Credential: staging greeter set"]),
        ("credential", ["Credential: global greeter set"]),
        ("keys", [f"Keys: staging add {keys['staging'].recipient}"]),
    ]
    text = cli("history", "--env", "production", "--repo", creds_repo.path).out
    assert "credential  Copy credential greeter from staging to production" in text
    assert "staging greeter" not in text and "recipient for staging" not in text


def test_a_credential_in_use_keeps_what_its_workflows_use(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    """Removing a credential a workflow declares would leave it unresolved (`validate`'s
    LG700; a daemon refuses that environment's next commits), and new values without a
    field a workflow uses would lack it (LG701): refused, writing nothing, unless another
    file still resolves it there."""
    head = git(creds_repo.path, "rev-parse", "HEAD")
    every = _key_args(keys, "development", "staging", "production")
    rm = ("credentials", "rm", "greeter")
    result = cli(*rm, "--global", *every, "--repo", creds_repo.path)
    assert (result.code, result.err) == (
        1,
        "error: hello in development, hello in staging, hello in production declare "
        "credential greeter, which would then not resolve there\n"
        "hint: remove greeter from those workflows first (and promote that), or keep it; "
        "`loomgit credentials set` replaces its values\n",
    )
    assert git(creds_repo.path, "rev-parse", "HEAD") == head
    # A scoped copy goes while the global one resolves it; the global one goes where a
    # scoped copy stays.
    fields = tmp_path / "f.json"
    fields.write_text(json.dumps({"token": CANARY + "-staging"}))
    _set_in(cli, creds_repo, "greeter", "staging", "--from-json", fields)
    assert cli(*rm, "--env", "staging", *every, "--repo", creds_repo.path).code == 0
    _set_in(cli, creds_repo, "greeter", "staging", "--from-json", fields)
    result = cli(*rm, "--global", *every, "--repo", creds_repo.path)
    assert result.err.startswith("error: hello in development, hello in production declare ")
    assert cli("validate", "--repo", creds_repo.path).code == 0
    # New values must keep every field a workflow uses (LG701 otherwise); the others may go.
    creds_repo.write(
        creds_repo.wf("development"),
        HELLO.replace("{{ vars.greeting }}", "{{ credentials.greeter.token }}"),
    )
    head = commit_all(creds_repo.path, "greet with the token")
    fields.write_text(json.dumps({"key": "k"}))
    set_global = ("credentials", "set", "greeter", "--global", "--from-json", fields, *every)
    result = cli(*set_global, "--repo", creds_repo.path)
    assert (result.code, result.err) == (
        1,
        "error: hello in development uses field token of credential greeter, which it would "
        "then lack\nhint: give it every field in use; drop one once no workflow uses it\n",
    )
    assert git(creds_repo.path, "rev-parse", "HEAD") == head
    fields.write_text(json.dumps({"token": "t"}))
    assert cli(*set_global, "--repo", creds_repo.path).code == 0
    assert cli("validate", "--repo", creds_repo.path).code == 0


def test_setting_or_copying_the_same_values_again_writes_nothing(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    fields = tmp_path / "f.json"
    fields.write_text(json.dumps({"token": CANARY + "-staging"}))
    both = _key_args(keys, "staging", "production")

    def run(*args: object) -> Result:
        result = cli("credentials", *args, "--repo", creds_repo.path)
        assert result.code == 0, result.err
        return result

    run("set", "greeter", "--env", "staging", "--from-json", fields, *both)
    run("copy", "greeter", "--from", "staging", "--to", "production", *both)
    head = git(creds_repo.path, "rev-parse", "HEAD")
    again = run("set", "greeter", "--env", "staging", "--from-json", fields, *both)
    assert "greeter in staging already has these values: nothing written" in again.out
    again = run("copy", "greeter", "--from", "staging", "--to", "production", *both)
    assert "greeter in production already has staging's values: nothing written" in again.out
    assert git(creds_repo.path, "rev-parse", "HEAD") == head
    fields.write_text(json.dumps({"token": CANARY + "-new"}))  # a changed value still writes
    run("set", "greeter", "--env", "staging", "--from-json", fields, *both)
    run("copy", "greeter", "--from", "staging", "--to", "production", *both)
    assert git(creds_repo.path, "rev-list", "--count", f"{head}..HEAD") == "2"
    assert CANARY not in again.out + git(creds_repo.path, "log", "--format=%B")


def test_credential_and_key_commands_report_their_commits_as_json(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    """`--format json` on each command that writes: the commit it made (the branch's new
    head), or `changed: false` and no commits; notes go to standard error, and no value."""
    fields = tmp_path / "f.json"
    fields.write_text(json.dumps({"token": CANARY + "-staging"}))
    both = _key_args(keys, "staging", "production")
    repo = creds_repo.path
    branch = git(repo, "branch", "--show-current")

    def report(*args: object) -> dict[str, object]:
        result = cli(*args, *both, "--format", "json", "--repo", repo)
        assert result.code == 0, result.err
        assert CANARY not in result.out + result.err
        out: dict[str, object] = json.loads(result.out)  # nothing else on standard output
        return out

    def wrote(**fields: object) -> dict[str, object]:
        head = git(repo, "rev-parse", "HEAD")
        commit = {"commit": head, "branch": branch, "created_from": None}
        return {"changed": True, **fields, "commits": [commit]}

    staging = {"credential": "greeter", "scope": "staging"}
    set_ = ("credentials", "set", "greeter", "--env", "staging", "--from-json", fields)
    assert report(*set_) == wrote(**staging)
    assert report(*set_) == {"changed": False, **staging, "commits": []}
    copy = ("credentials", "copy", "greeter", "--from", "staging", "--to", "production")
    moved = {"credential": "greeter", "from": "staging", "to": "production"}
    assert report(*copy) == wrote(**moved)
    assert report(*copy) == {"changed": False, **moved, "commits": []}
    assert report("credentials", "rm", "greeter", "--env", "staging") == wrote(**staging)

    out = tmp_path / "private" / "staging.key"
    made = report("keys", "generate", "--env", "staging", "--out", out)
    recipient = made["recipient"]
    assert isinstance(recipient, str) and recipient in out.read_text()
    assert made == wrote(environment="staging", recipient=recipient, identity_file=str(out))
    adding = ("keys", "add", "--env", "staging", "--recipient", recipient)
    added = {"environment": "staging", "recipient": recipient, "action": "add"}
    assert report(*adding) == {"changed": False, **added, "commits": []}
    removing = ("keys", "rm", "--env", "staging", "--recipient", recipient, *both)
    removal = cli(*removing, "--format", "json", "--repo", repo)
    assert removal.code == 0, removal.err
    gone = {"environment": "staging", "recipient": recipient, "action": "remove"}
    assert json.loads(removal.out) == wrote(**gone)
    assert "note: the removed key can still decrypt" in removal.err
    assert git(repo, "status", "--porcelain") == ""


def test_changing_an_existing_file_needs_its_key(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    fields = tmp_path / "f.json"
    fields.write_text(json.dumps({"url": "https://x"}))
    change = ("credentials", "set", "other", "--global", "--from-json", fields)
    result = cli(*change, "--repo", creds_repo.path)
    assert result.code == 1 and result.err.splitlines() == [
        "error: no age key given, so credentials.sops.yaml cannot be decrypted",
        "hint: pass --age-key-file ENV=PATH with the key of an environment that reads it, or "
        "--age-key-dir DIR, or set LOOMGIT_AGE_KEY_FILE_<ENV>",
    ]
    # The global file is read with whichever key given is one of its recipients, in any
    # order; a stranger's key alone is refused as such.
    stranger = make_key(tmp_path, "stranger")
    staging = ("--age-key-file", f"staging={keys['staging'].path}")
    for given in (
        ("--age-key-file", f"development={stranger.path}", *staging),
        (*staging, "--age-key-file", f"development={stranger.path}"),
    ):
        assert cli(*change, *given, "--repo", creds_repo.path).code == 0
    lost = ("--age-key-file", f"development={stranger.path}")
    result = cli(*change, *lost, "--repo", creds_repo.path)
    assert result.code == 1 and result.err.splitlines() == [
        "error: the age key given for development cannot decrypt credentials.sops.yaml",
        "hint: it is not one of the file's recipients",
    ]
    result = cli(*change, *lost, "--age-key-file", f"production={stranger.path}",
                 "--repo", creds_repo.path)  # fmt: skip
    assert result.code == 1 and result.err.splitlines() == [
        "error: none of the age keys given (development, production) can decrypt "
        "credentials.sops.yaml",
        "hint: it is encrypted for none of them; `loomgit keys list` shows whose keys it is",
    ]


def test_keys_generate(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    inside = cli(
        "keys",
        "generate",
        "--env",
        "staging",
        "--out",
        creds_repo.path / "new.key",
        "--repo",
        creds_repo.path,
    )
    assert inside.code == 1 and "never go into git" in inside.err
    out = tmp_path / "private" / "staging.key"
    result = cli(
        "keys",
        "generate",
        "--env",
        "staging",
        "--out",
        out,
        *_key_args(keys, "staging"),
        "--repo",
        creds_repo.path,
    )
    assert result.code == 0, result.err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    shared = (creds_repo.path / "credentials.sops.yaml").read_bytes()
    token = sops.decrypt(shared, out, what="g", env="staging")["greeter"]["token"]
    assert token.get_secret_value() == CANARY
    assert cli("validate", "--repo", creds_repo.path).code == 0
    again = cli("keys", "generate", "--env", "staging", "--out", out, "--repo", creds_repo.path)
    assert again.code == 1 and "will not overwrite" in again.err
    under_a_file = out / "new.agekey"  # `out` is a file: this key does not exist, it cannot
    again = cli(
        "keys", "generate", "--env", "staging", "--out", under_a_file, "--repo", creds_repo.path
    )
    assert again.code == 1 and f"cannot write {under_a_file}: {out} is not a folder" in again.err


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        ("broken: [\n", ".sops.yaml:"),  # a syntax error, with its line
        ("deep: " + "[" * 400 + "]" * 400 + "\n", "nested too deeply"),  # past ruamel's reach
        ("deep: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 1,000 levels"),
    ],
    ids=["syntax", "400-levels", "50000-levels"],
)
def test_keys_add_refuses_an_unreadable_sops_config_clearly(
    creds_repo: Repo,
    keys: dict[str, AgeKey],
    cli: Callable[..., Result],
    tmp_path: Path,
    tail: str,
    said: str,
) -> None:
    config = creds_repo.path / ".sops.yaml"
    config.write_text(config.read_text() + tail)
    git(creds_repo.path, "commit", "-qam", "hand-edited .sops.yaml")
    head = git(creds_repo.path, "rev-parse", "HEAD")
    out = tmp_path / "staging.key"
    args = ("--env", "staging", *_key_args(keys, "staging"), "--repo", creds_repo.path)
    result = cli("keys", "generate", "--out", out, *args)
    assert result.code == 1, result.err
    first = result.err.splitlines()[0]
    assert first.startswith("error: .sops.yaml") and said in first, result.err
    assert "unexpected error" not in result.err
    assert not out.exists()  # the unused identity is removed again
    assert git(creds_repo.path, "rev-parse", "HEAD") == head


def test_promotion_checks_and_copies_credentials(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    needs = HELLO.replace("credentials: [greeter]", "credentials: [greeter, shop, mail]")
    creds_repo.write(creds_repo.wf("development"), needs)
    fields = tmp_path / "f.json"
    for name in ("shop", "mail"):
        fields.write_text(json.dumps({"token": f"{CANARY}-{name}"}))
        _set_in(
            cli,
            creds_repo,
            name,
            "development",
            "--from-json",
            fields,
            *_key_args(keys, "development"),
        )
    git(creds_repo.path, "commit", "-qam", "use shop and mail")
    refused = cli("promote", "hello", "--to", "staging", "--repo", creds_repo.path)
    assert refused.code == 1 and "shop, which does not resolve in staging" in refused.err
    dry = cli("promote", "hello", "--to", "staging", "--dry-run", "--repo", creds_repo.path)
    assert dry.code == 1 and "credential shop: DOES NOT RESOLVE in staging" in dry.out
    assert "credential greeter: resolves in staging" in dry.out
    # `diff` tells the same, without a key (names are readable), and exits 0: it only shows.
    shown = cli("diff", "hello", "--to", "staging", "--repo", creds_repo.path)
    assert shown.code == 0 and "credential shop: DOES NOT RESOLVE in staging" in shown.out
    assert "credential greeter: resolves in staging" in shown.out
    shown = cli("diff", "hello", "--to", "staging", "--format", "json", "--repo", creds_repo.path)
    assert {c["name"]: c["resolves"] for c in json.loads(shown.out)["credentials"]} == {
        "greeter": True,
        "shop": False,
        "mail": False,
    }

    def promote_copying(*names: str, keys_of: tuple[str, ...]) -> Result:
        copies = [arg for name in names for arg in ("--copy-credential", name)]
        args = [*copies, *_key_args(keys, *keys_of), "--format", "json"]
        return cli("promote", "hello", "--to", "staging", *args, "--repo", creds_repo.path)

    result = promote_copying("shop", "mail", keys_of=("development",))
    assert result.code == 0, result.err
    assert json.loads(result.out)["credentials_copied"] == ["mail", "shop"]
    assert "Loomgit-Credential: staging shop copied from development" in git(
        creds_repo.path, "log", "-1", "--format=%B"
    )
    staged = (creds_repo.path / "environments/staging/credentials.sops.yaml").read_bytes()
    copied = sops.decrypt(staged, keys["staging"].path, what="s", env="staging")
    assert {n: copied[n]["token"].get_secret_value() for n in ("shop", "mail")} == {
        "shop": f"{CANARY}-shop",
        "mail": f"{CANARY}-mail",
    }  # each copied credential is in the one commit, none overwrites another
    creds_repo.write(creds_repo.wf("development"), needs.replace("0 9 *", "0 10 *"))
    git(creds_repo.path, "commit", "-qam", "greet at ten")
    again = promote_copying("shop", keys_of=("development", "staging"))
    assert again.code == 0, again.err
    assert json.loads(again.out)["credentials_copied"] == []
    assert "shop in staging already has development's values: not copied" in again.err
    assert "Loomgit-Credential" not in git(creds_repo.path, "log", "-1", "--format=%B")
    after = (creds_repo.path / "environments/staging/credentials.sops.yaml").read_bytes()
    assert after == staged  # not even re-encrypted
    text = cli("promote", "hello", "--to", "production", "--dry-run", "--repo", creds_repo.path)
    assert "credential greeter: resolves in production" in text.out
    assert (
        "shop, which does not resolve in production"
        in cli("promote", "hello", "--to", "production", "--repo", creds_repo.path).err
    )


def test_fields_that_are_not_a_json_object_say_where_not_what(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    """`--from-json` that is not an object of fields: the file, the line and the column, or
    what it is instead; never the text, which holds the secret values. A field given
    twice is refused rather than one of the two kept silently."""
    head = git(creds_repo.path, "rev-parse", "HEAD")
    fields = tmp_path / "f.json"
    hint = 'hint: give an object of fields, {"token": "…"}'
    for text, says in (
        (f'{{"token": "{CANARY}",\n', f": {fields} is not JSON: Expecting property name "
         "enclosed in double quotes at line 2, column 1"),
        (f'{{"token": "{CANARY}"', f": {fields} is not JSON: Expecting ',' delimiter at line "
         f"1, column {len(CANARY) + 13}"),
        (" \n", f": {fields} is empty"),
        (f'["{CANARY}"]', " needs a JSON object of fields, not a list"),
        (f'"{CANARY}"', " needs a JSON object of fields, not a single value"),
    ):  # fmt: skip
        fields.write_text(text)
        result = cli("credentials", "set", "x", "--env", "staging", "--from-json", fields,
                     *_key_args(keys, "staging"), "--repo", creds_repo.path)  # fmt: skip
        assert result.code == 2 and result.err.splitlines() == [
            f"error: --from-json{says}",
            hint,
        ], result.err
    fields.write_text(f'{{"token": "{CANARY}", "token": "other"}}')
    result = cli("credentials", "set", "x", "--env", "staging", "--from-json", fields,
                 "--repo", creds_repo.path)  # fmt: skip
    assert (result.code, result.err) == (2, "error: --from-json gives field 'token' twice\n")
    fields.write_bytes(b'{"token": "\xff"}')
    result = cli("credentials", "set", "x", "--env", "staging", "--from-json", fields,
                 "--repo", creds_repo.path)  # fmt: skip
    assert (result.code, result.err) == (2, f"error: --from-json: {fields} is not UTF-8 text\n")
    assert git(creds_repo.path, "rev-parse", "HEAD") == head


# -- the canary ------------------------------------------------------------------------


def test_canary_never_leaks(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    outputs: list[str] = []

    def run(*args: object) -> Result:
        result = cli(*[str(a) for a in args], "--repo", creds_repo.path)
        outputs.append(result.out + result.err)
        return result

    fields = tmp_path / "f.json"
    for env in ("development", "staging", "production"):
        fields.write_text(json.dumps({"token": f"{CANARY}-{env}"}))
        run("credentials", "set", "greeter", "--env", env, "--from-json", fields)
    bad_fields = tmp_path / "bad.json"
    bad_fields.write_text(json.dumps({"not an identifier": CANARY}))
    run("credentials", "set", "x", "--env", "staging", "--from-json", bad_fields)  # CLI error
    run(
        "credentials",
        "copy",
        "greeter",
        "--from",
        "staging",
        "--to",
        "production",
        "--age-key-file",
        f"staging={keys['production'].path}",
    )  # wrong key
    scoped = creds_repo.path / "environments/staging/credentials.sops.yaml"
    scoped.write_bytes(scoped.read_bytes().replace(b"data:", b"data:AAAA", 1))
    git(creds_repo.path, "commit", "-qam", "tamper with staging's credentials")
    run(
        "credentials",
        "copy",
        "greeter",
        "--from",
        "staging",
        "--to",
        "production",
        *_key_args(keys, "staging"),
    )  # tampered file
    creds_repo.write(
        creds_repo.wf("development"),
        HELLO.replace("{{ trigger.body.name }}", "{{ credentials.greeter.nope }}"),
    )
    run("validate")
    run("validate", "--format", "json")
    run("credentials", "list")
    run("promote", "hello", "--to", "staging", "--dry-run")
    run("history")
    assert any("failed its integrity check" in o for o in outputs)
    assert any("cannot decrypt" in o for o in outputs)
    log = git(creds_repo.path, "log", "--format=%B%n%an%n%s")
    for text in [*outputs, log]:
        assert CANARY not in text


def test_keys_rm_also_takes_a_key_no_other_environment_has_off_the_global_file(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "private" / "staging-2.key"
    args = ("--env", "staging", "--repo", creds_repo.path)
    assert cli("keys", "generate", "--out", out, *_key_args(keys, "staging"), *args).code == 0
    old = keys["staging"]
    result = cli(
        "keys", "rm", "--recipient", old.recipient, "--age-key-file", f"staging={out}", *args
    )
    assert result.code == 0, result.err
    assert CANARY not in result.out + result.err
    config = (creds_repo.path / ".sops.yaml").read_text()
    assert old.recipient not in config and "Managed by" in config  # comments kept
    shared = (creds_repo.path / "credentials.sops.yaml").read_bytes()
    assert sops.decrypt(shared, out, what="g", env="staging")["greeter"]["token"]
    with pytest.raises(sops.KeyMissing):
        sops.decrypt(shared, old.path, what="g", env="staging")
    assert sops.decrypt(shared, keys["production"].path, what="g", env="production")
    assert cli("validate", "--repo", creds_repo.path).code == 0
    assert git(creds_repo.path, "status", "--porcelain") == ""
    listed = cli("keys", "list", "--env", "staging", "--repo", creds_repo.path).out
    assert old.recipient not in listed and "age1" in listed
    assert cli("keys", "list", "--env", "nope", "--repo", creds_repo.path).code == 2
    bad = cli("keys", "rm", "--recipient", "age1nope", *args)
    assert bad.code == 2 and "not an age public key" in bad.err


def test_keys_rm_refuses_a_key_a_hand_written_rule_gives(
    creds_repo: Repo, keys: dict[str, AgeKey], cli: Callable[..., Result], tmp_path: Path
) -> None:
    # A rule of the user's, first, covers staging's file: loomgit cannot take the key out.
    config = creds_repo.path / ".sops.yaml"
    both = f"{keys['staging'].recipient},{keys['production'].recipient}"
    config.write_text(
        config.read_text().replace(
            "creation_rules:\n",
            f"creation_rules:\n- path_regex: staging/credentials\\.sops\\.yaml$\n  age: {both}\n",
        )
    )
    git(creds_repo.path, "commit", "-qam", "a rule by hand")
    head = git(creds_repo.path, "rev-parse", "HEAD")
    result = cli(
        "keys", "rm", "--env", "staging", "--recipient", keys["staging"].recipient,
        *_key_args(keys, "staging"), "--repo", creds_repo.path,
    )  # fmt: skip
    assert result.code == 1
    assert "comes from a creation rule loomgit does not manage" in result.err
    assert git(creds_repo.path, "rev-parse", "HEAD") == head
    assert git(creds_repo.path, "status", "--porcelain") == ""
