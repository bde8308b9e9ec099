//! Shared code of the workspace's examples, benches and integration tests
//! (the fixture parity runner lives here).
