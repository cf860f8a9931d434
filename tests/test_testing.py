"""transforms.testing: the comparison of ASA's local test tool (rows as objects, order ignored,
IgnoreFields), plus number tolerance and datetimes as instants."""

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from transforms.testing import asa_equal_to, compare_rows, values_equal


@pytest.mark.parametrize("expected, actual", [
    (1, 1.0),
    (0.3, 0.1 + 0.2),
    (12.345678, 12.3456781),
    ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.0000000Z"),
    ("2024-01-01T10:00:00Z", "2024-01-01T11:00:00+01:00"),
    ("2024-01-01T10:00:00Z", dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc)),
    ({"a": [1, {"b": "x"}]}, {"A": [1.0, {"b": "x"}]}),
    (None, None),
])
def test_equal_values(expected, actual):
    assert values_equal(expected, actual)


@pytest.mark.parametrize("expected, actual", [
    (1, 2), (1, "1"), (True, 1), (0.3, 0.31), ("2024-01-01T10:00:00Z", "2024-01-01T10:00:01Z"),
    ("abc", "ABC"), ([1, 2], [2, 1]), ({"a": 1}, {"a": 1, "b": 2}), (None, 0),
])
def test_different_values(expected, actual):
    assert not values_equal(expected, actual)


def test_multiset_order_ignored_each_row_used_once():
    diff = compare_rows([{"k": 1}, {"k": 1}, {"k": 2}], [{"k": 2}, {"k": 1}, {"k": 3}])
    assert (diff.matched, diff.missing, diff.unexpected) == (2, [{"k": 1}], [{"k": 3}])
    assert not diff.ok


def test_ignore_fields():
    assert compare_rows([{"id": 1, "EventProcessedUtcTime": "x"}], [{"id": 1, "eventprocessedutctime": "y"}],
                        ignore_fields=["EventProcessedUtcTime"]).ok


def test_asa_equal_to_in_a_pipeline():
    with TestPipeline() as p:
        assert_that(p | beam.Create([{"n": 2.0}, {"n": 1}]), asa_equal_to([{"n": 1}, {"n": 2}]))
    with pytest.raises(Exception, match="missing"):
        with TestPipeline() as p:
            assert_that(p | beam.Create([{"n": 3}]), asa_equal_to([{"n": 1}]))
