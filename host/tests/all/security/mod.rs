//! The attacks of the December 2026 security review, each as a test over real HTTP on
//! loopback: a valid caller crafting writes, batches, ids and connections, and reading
//! every byte of every answer. Each test failed on the code before its fix.

mod connections;
mod fairness;
mod feeds;
mod files;
mod proxies;
mod slice_counts;
mod tokens;
mod writes;
