"""The shared fixtures of tests/conftest.py (a tiny config, model and weights file) for the lab's tests."""

from tests.conftest import tiny_cfg, tiny_model, tiny_weights  # noqa: F401
