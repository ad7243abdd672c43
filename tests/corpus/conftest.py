"""The bad-input corpus is data for tests/test_bad_inputs.py: its YAML case files must not be collected as cases."""

collect_ignore_glob = ["*.yaml", "*.yml", "**/*.yaml", "**/*.yml"]
