//! pbx-server binary.
fn main() {}
