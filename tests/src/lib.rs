//! Shared helpers of the test suite: loading the default policies and scenario files.
