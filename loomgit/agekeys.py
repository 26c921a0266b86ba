"""Where a command's age identities come from, as given on its command line. Kept apart
from `credops`, which loads sops support, so that the command line can hold them without
it; `credops.key_files` finds the files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEY_ENV_PREFIX = "LOOMGIT_AGE_KEY_FILE_"
KEY_DIR_ENV = "LOOMGIT_AGE_KEY_DIR"
KEY_SUFFIX = ".agekey"  # a key folder holds ENV.agekey for each environment it has a key of


def key_env_var(env: str) -> str:
    """The variable that names `env`'s key file: LOOMGIT_AGE_KEY_FILE_<ENV>."""
    return KEY_ENV_PREFIX + env.upper().replace("-", "_")


@dataclass(frozen=True)
class AgeKeys:
    """`--age-key-file ENV=PATH` options, and a folder of keys named ENV.agekey
    (`--age-key-dir`, or $LOOMGIT_AGE_KEY_DIR)."""

    files: tuple[str, ...] = ()
    folder: Path | None = None
