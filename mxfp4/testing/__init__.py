"""Fixtures for tests, benchmarks, fuzzing and examples: synthetic gpt-oss checkpoints, tensor comparisons,
inputs that cover small spaces completely."""
