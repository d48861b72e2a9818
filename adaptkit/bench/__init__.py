"""Benchmarks: naive vs planned vs fused adapters and the whole estimator, timed with their spread."""
