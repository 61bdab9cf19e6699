"""stream-monitor: a streaming drift monitor for machine-learning models in production."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
