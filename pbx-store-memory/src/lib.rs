//! The embedded, in-memory CallStore for pbx.
