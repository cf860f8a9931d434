"""AsaQuery on TestPipeline: steps, outputs, UNION, UDF call stages and the failed output."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.deadletter import DeadLetter
from transforms.errors import QueryError
from transforms.functions.python import PythonFunction
from transforms.operators.compile import AsaQuery

TRIPS = [
    {"vendorid": 1, "distance": "3.5", "fare": 12.0},
    {"vendorid": 2, "distance": "oops", "fare": 9.0},
    {"vendorid": 1, "distance": "10", "fare": None},
    {"vendorid": 3, "distance": "0.5", "fare": 4.0},
]


def reasons(failed):
    return failed | "reasons" >> beam.Map(lambda d: (d.step, d.reason))


def test_filter_projection_cast_and_dead_letter():
    q = "SELECT vendorid, CAST(distance AS float) AS km INTO output FROM input WHERE fare IS NOT NULL"
    with TestPipeline() as p:
        out = {"input": p | beam.Create(TRIPS)} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"vendorid": 1, "km": 3.5}, {"vendorid": 3, "km": 0.5}]))
        assert_that(reasons(out.failed), equal_to([("Select into output", "cast_error")]), label="failed")


def test_single_pcollection_input_and_default_output_name():
    with TestPipeline() as p:
        out = p | beam.Create([{"a": 1}, {"a": 2}]) | AsaQuery("SELECT a * 10 AS b FROM anything WHERE a > 1")
        assert_that(out["output"], equal_to([{"b": 20}]))


def test_with_step_shared_by_two_outputs_and_union():
    q = """
    WITH valid AS (SELECT vendorid AS v, TRY_CAST(distance AS float) AS km FROM input)
    SELECT v INTO near FROM valid WHERE km < 5
    SELECT v, km INTO far FROM valid WHERE km >= 5
    UNION SELECT vendorid, -1 FROM input WHERE vendorid = 2
    """
    with TestPipeline() as p:
        out = {"input": p | beam.Create(TRIPS)} | AsaQuery(q, outputs=["near", "far"])
        assert_that(out["near"], equal_to([{"v": 1}, {"v": 3}]), label="near")
        assert_that(out["far"], equal_to([{"v": 1, "km": 10.0}, {"v": 2, "km": -1}]), label="far")
    labels = {t.full_label for t in p.transforms_stack[0].parts} if hasattr(p, "transforms_stack") else set()
    del labels


def test_graph_labels_read_like_the_query():
    p = beam.Pipeline()
    q = "WITH ModelInput AS (SELECT a FROM input) SELECT a INTO output FROM ModelInput"
    _ = {"input": p | beam.Create([{"a": 1}])} | "Query" >> AsaQuery(q)
    labels = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.append(node.full_label)

    p.visit(Visitor())
    assert "Query/ModelInput" in labels and "Query/Select into output" in labels


class Counting(PythonFunction):
    """Counts calls in a class attribute (DirectRunner runs in this process)."""

    seen: list = []

    def call_batch(self, args_list):
        Counting.seen.extend(a[0] for a in args_list)
        return super().call_batch(args_list)


def test_udf_in_case_is_called_only_for_rows_taking_the_branch():
    Counting.seen = []
    fn = Counting("double", lambda x: x * 2)
    q = "SELECT a, CASE WHEN a > 1 THEN udf.double(a) ELSE 0 END AS d INTO output FROM input"
    with TestPipeline() as p:
        out = {"input": p | beam.Create([{"a": 1}, {"a": 2}, {"a": 3}, {"a": None}])} | AsaQuery(q, [fn])
        assert_that(out["output"], equal_to([{"a": 1, "d": 0}, {"a": 2, "d": 4}, {"a": 3, "d": 6},
                                             {"a": None, "d": 0}]))
    assert sorted(Counting.seen) == [2, 3]


def test_udf_errors_dead_letter_the_row_and_nested_calls_run_in_order():
    inv = PythonFunction("inv", lambda x: 1 / x)
    arr = PythonFunction("pair", lambda a, b: [a, b])
    q = "SELECT udf.pair(a, udf.inv(a)) AS r INTO output FROM input WHERE udf.inv(a) > 0.2"
    with TestPipeline() as p:
        out = {"input": p | beam.Create([{"a": 1}, {"a": 0}, {"a": 4}, {"a": -1}])} | AsaQuery(q, [inv, arr])
        assert_that(out["output"], equal_to([{"r": [1, 1.0]}, {"r": [4, 0.25]}]))
        failed = out.failed | beam.Map(lambda d: (d.reason, d.row, isinstance(d, DeadLetter)))
        assert_that(failed, equal_to([("udf_error", {"a": 0}, True)]), label="failed")


def test_rows_in_equal_rows_out_plus_filtered_plus_dead_lettered():
    rows = [{"k": i, "v": str(i) if i % 7 else "bad"} for i in range(200)]
    q = "SELECT k, CAST(v AS bigint) AS v INTO output FROM input WHERE k % 3 <> 0"
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        total = ((out["output"] | "o" >> beam.Map(lambda _: "out")),
                 (out.failed | "f" >> beam.Map(lambda _: "dead"))) | beam.Flatten() | beam.combiners.Count.PerElement()
        kept = [i for i in range(200) if i % 3]
        dead = [i for i in kept if i % 7 == 0]
        assert_that(total, equal_to([("out", len(kept) - len(dead)), ("dead", len(dead))]))


def test_bad_query_fails_at_construction():
    with pytest.raises(QueryError) as err:
        AsaQuery("SELECT a,\nFROM input")
    assert (err.value.line, err.value.column) == (2, 1)
