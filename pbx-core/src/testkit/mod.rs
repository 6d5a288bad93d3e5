//! The conformance suite every [`CallStore`](crate::store::CallStore) backend runs
//! (feature `testkit`). Filled in by the conformance work.
