"""Plan → Beam: the operators a query plan compiles into.

``compile.AsaQuery`` turns each plan step into one named composite PTransform, built from the
operators here: windows and GROUP BY (``windows``, ``aggregation``, ``aggregates``), joins
(``joins``), analytic functions (``analytic``); ``timers`` keeps the timers of stateful operators
apart when Beam fuses them into one stage. The front end (``transforms.query``) imports none
of this: it knows no Beam.
"""
