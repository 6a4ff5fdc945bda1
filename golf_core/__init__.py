"""golf: a plugin-based technique registry and trainer for parameter-golf-style language models.

Plugins import what they need from here::

    from golf_core import Legality, Technique, hookimpl, param
"""

from __future__ import annotations

from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.hookspecs import hookimpl
from golf_core.technique import Legality, Technique

__version__ = "0.1.0"

__all__ = ["GolfError", "Legality", "Technique", "__version__", "hookimpl", "param"]
