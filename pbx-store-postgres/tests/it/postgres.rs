//! PostgreSQL-only cases.
