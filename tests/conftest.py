"""Test-wide settings: DirectRunner never tries to download the Prism runner (no internet here)."""

import logging

import pytest
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

# The shared fixture modules are imported by some test modules and named in others'
# ``pytest_plugins``: rewrite their asserts whichever comes first (else pytest warns).
pytest.register_assert_rewrite("fixtures_azurite", "fixtures_azureml")

# TestPipeline() builds a plain DirectRunner; this is the switch it offers to skip Prism.
SwitchingDirectRunner._is_interactive = True

logging.getLogger("apache_beam").setLevel(logging.WARNING)
