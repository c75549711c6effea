"""``sonoflow bench``: latency benchmarks from scenario files, measured by one protocol.

Modules:

* :mod:`~sonoflow.stream.bench.scenario` - scenario files (TOML): loading, validation, the
  cases a scenario expands to, its hash;
* :mod:`~sonoflow.stream.bench.engines` - one measured run of a case: the SonoFlow pipeline
  (threads / processes / tcp), the same stage functions in a plain loop, or an external peer;
* :mod:`~sonoflow.stream.bench.procstat` - CPU and memory per process, read from ``/proc``;
* :mod:`~sonoflow.stream.bench.stats` - pooling runs into the protocol's distributions;
* :mod:`~sonoflow.stream.bench.protocol` - runs every case of a scenario, interleaved, runs x
  cases, and builds the JSON-lines records;
* :mod:`~sonoflow.stream.bench.report` - JSON lines, the markdown table;
* :mod:`~sonoflow.stream.bench.plots` - latency CDFs, per-stage stacked bars, latency vs streams;
* :mod:`~sonoflow.stream.bench.machine` - the machine and the versions a record names.
"""
