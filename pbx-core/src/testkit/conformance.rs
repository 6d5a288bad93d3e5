//! The backend conformance suite. Filled in by the conformance work.
