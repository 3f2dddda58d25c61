"""Benchmarks: grids of (dataset x split or budget x method x seed) cells -> JSON-lines rows -> tables and plots.

:mod:`~magkit.bench.spec` reads and checks a sweep spec and lists its cells; :mod:`~magkit.bench.cell` runs
one cell into a row; :mod:`~magkit.bench.executors` runs cells in this process or on Ray;
:mod:`~magkit.bench.rows` reads and appends rows files; :mod:`~magkit.bench.sweep` plans and runs a sweep;
:mod:`~magkit.bench.report` merges rows into tables and plots; :mod:`~magkit.bench.suite` is
``magkit bench run``; :mod:`~magkit.bench.throughput` measures a GCN step's FLOP rate.
"""
