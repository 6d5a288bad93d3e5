//! The bundled pbx HTTP server.
