"""The module a config fragment's ``custom_imports`` names: importing it registers adaptkit in mmpose.

Generated fragments name ``adaptkit.mmpose_plugin``; the registrations live in
``adaptkit.mm.plugin``.
"""

from adaptkit.mm.plugin import *  # noqa: F401,F403  (registers on import)
from adaptkit.mm.plugin import __all__  # noqa: F401
