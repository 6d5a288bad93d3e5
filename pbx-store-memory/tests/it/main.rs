//! The memory store against the backend suites of `pbx_core::testkit`, plus its own
//! cases.

use pbx_store_memory::MemoryCallStore;

mod memory;

mod conformance {
    use super::*;
    pbx_core::call_store_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] setup() => MemoryCallStore::default());
}

mod gateway {
    use super::*;
    pbx_core::gateway_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] setup() => MemoryCallStore::default());
}
