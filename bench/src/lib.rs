//! Benchmark support for `scripts/bench`. See BENCHMARKS.md.
