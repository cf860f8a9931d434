"""asa-beam: Azure Stream Analytics queries as Apache Beam transforms."""
