"""Evaluation: synthetic data with ground truth, metrics and the classic baselines (demo, benchmarks, tests)."""
