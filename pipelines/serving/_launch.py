"""Runs the Azure ML inference server (``azmlinfsrv``) bound to one interface.

``azmlinfsrv`` always binds 0.0.0.0; this launcher sets the host (``ASA_BEAM_SERVE_HOST``,
default 127.0.0.1) and then runs the server's own command line unchanged::

    python -m pipelines.serving._launch --entry_script score_records.py --port 5001
"""

import os
import sys


def main() -> None:
    from azureml_inference_server_http import amlserver

    amlserver.DEFAULT_HOST = os.environ.get("ASA_BEAM_SERVE_HOST", "127.0.0.1")
    sys.argv[0] = "azmlinfsrv"
    sys.exit(amlserver.run())


if __name__ == "__main__":
    main()
