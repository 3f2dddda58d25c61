"""Benchmark suites: (dataset x split x method x seed) grids -> JSON-lines rows -> markdown/JSON tables."""
