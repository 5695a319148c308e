//! The generator of realistic worlds for benchmarks.
