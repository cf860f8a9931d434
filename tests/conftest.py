"""Test-wide settings: DirectRunner never tries to download the Prism runner (no internet here)."""

import logging

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

# TestPipeline() builds a plain DirectRunner; this is the switch it offers to skip Prism.
SwitchingDirectRunner._is_interactive = True

logging.getLogger("apache_beam").setLevel(logging.WARNING)
