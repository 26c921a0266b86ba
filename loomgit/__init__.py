"""loomgit: a GitOps engine for workflow automation."""

from __future__ import annotations

__version__ = "0.1.0"
