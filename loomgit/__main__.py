from __future__ import annotations

from loomgit.cli import main

main()
