//! The `pgstream` command.
fn main() {}
