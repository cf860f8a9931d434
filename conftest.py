"""Doctests of the library (``pytest --doctest-modules transforms``) run as the tests do: the
DirectRunner never tries to download the Prism runner (no internet here)."""

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

SwitchingDirectRunner._is_interactive = True
