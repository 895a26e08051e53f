"""The real-footage evaluation set: build (benchmarks.real.build), score (benchmarks.real.score), fit the confidence."""
