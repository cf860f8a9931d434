"""asa-beam: Azure Stream Analytics queries on Apache Beam."""

from setuptools import find_packages, setup

setup(
    name="asa-beam",
    version="0.1.0",
    description="Run Azure Stream Analytics queries (with ML and JavaScript UDFs) on Apache Beam",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["transforms", "transforms.*", "pipelines", "pipelines.*"]),
    package_data={"pipelines": ["examples/*/*", "examples/*/*/*", "serving/*.py"]},
    install_requires=[
        # [azure]: azfs:// paths (Beam's Azure Blob Storage filesystem) for inputs, outputs, dead letters.
        "apache-beam[azure]>=2.77,<2.78",
        "requests>=2.31,<3",
        "pyarrow>=14",
        "fastavro>=1.9",
        "PyYAML>=6",
        "quickjs-ng>=0.17,<0.18",
        "msgspec>=0.18,<1",
        "orjson>=3.9",  # ML request bodies (datetimes passed to json_default; see azureml/client.py)
    ],
    extras_require={
        # The real Azure ML inference server and what the bundled model needs.
        "serve": [
            "azureml-inference-server-http>=1.5,<2",
            "inference-schema>=1.8",
            "scikit-learn>=1.4",
            "pandas>=2",
            "numpy>=1.26",
        ],
        "tune": ["matplotlib>=3.8"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "hypothesis>=6.100,<7"],
    },
    entry_points={"console_scripts": ["asa-beam=pipelines.cli:main"]},
)
