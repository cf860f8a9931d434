"""Pipeline options and runner choice for asa-beam jobs.

Beam options pass straight through (``--runner``, ``--direct_num_workers``, Flink and Dataflow
options). The default is DirectRunner in batch mode. Beam's DirectRunner first tries the
Prism runner, which it downloads at run time; asa-beam switches that off so local runs never
reach for the network: batch pipelines run on the FnApiRunner, streaming ones on the
BundleBasedDirectRunner, exactly as DirectRunner falls back to them.
"""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.runner import PipelineRunner

_DIRECT_NAMES = {None, "direct", "directrunner", "switchingdirectrunner"}


class LocalDirectRunner(SwitchingDirectRunner):
    """DirectRunner without the Prism attempt (no run-time download)."""

    def __init__(self) -> None:
        super().__init__()
        # SwitchingDirectRunner skips Prism for interactive sessions; that is the only switch it offers.
        self._is_interactive = True


def pipeline_options(argv: Sequence[str] = (), streaming: bool = False) -> PipelineOptions:
    options = PipelineOptions(list(argv))
    if streaming:
        options.view_as(StandardOptions).streaming = True
    return options


def make_runner(options: PipelineOptions) -> PipelineRunner | str:
    """The runner to use: our Prism-free DirectRunner for DirectRunner (the default), else the name."""
    name = options.view_as(StandardOptions).runner
    if name is None or (isinstance(name, str) and name.lower() in _DIRECT_NAMES):
        return LocalDirectRunner()
    return name
