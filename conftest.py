"""Repository-level pytest wiring.

The vsp-assert plugin itself is registered through its ``pytest11`` entry point (it is what users get). Here we
only enable ``pytester``, which the plugin's own tests use to run throwaway pytest sessions.
"""

pytest_plugins = ["pytester"]
