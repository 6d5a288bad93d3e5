//! The PostgreSQL CallStore for pbx: the production source of truth.
