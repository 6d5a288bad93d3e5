//! The model test.

use std::sync::Arc;

use crate::store::CallStore;

/// Random operation sequences against the store and a reference model (todo).
pub async fn model_random_operation_sequences(_store: Arc<dyn CallStore>) {}
