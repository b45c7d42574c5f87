"""Benchmarks for poolq: throughput, latency, memory, CPU and Redis cost per job (see README.md)."""
