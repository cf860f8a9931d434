"""A local Azure ML endpoint for asa-beam: the real inference server scoring a bundled model.

* ``model``: synthetic NYC-taxi-like trips and a deterministic, cached fare regressor.
* ``score_records`` / ``score_arrays``: entry scripts (designer records / inference-schema arrays).
* ``server``: ``LocalEndpoint`` (starts ``azmlinfsrv`` on a free loopback port) and
  ``asa-beam serve-model``.
* ``fake``: a small fault-injecting endpoint for tests and benchmarks.

Needs the ``serve`` extra (``pip install 'asa-beam[serve]'``) except for ``fake``.
"""
