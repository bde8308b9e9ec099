//! Shared code of the workspace's examples, benches and integration tests:
//! the fixture reader and the parity runner.
#![warn(missing_docs)]

pub mod fixture;
pub mod parity;
pub mod parity_one_prompt;
pub mod protocols;
pub mod volume_job;
