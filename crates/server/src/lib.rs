//! The Runnel broker: thread-per-core shards speaking the Kafka protocol.
//!
//! ```text
//! client ─TCP─▶ conn (any shard) ─ api::dispatch ─▶ produce / fetch / admin_api
//!                   │                                  │ ShardMsg over the channel mesh
//!                   │                                  ▼
//!                   │                         owner shard: runnel_log::Log
//!                   ◀── Response parts: bytes + file ranges (spliced) ──┘
//! ```
//!
//! See ARCHITECTURE.md for the map and the invariants.

pub mod admin;
pub mod admin_api;
pub mod api;
pub mod config;
pub mod conn;
pub mod fetch;
pub mod fetch_response;
pub mod group;
pub mod group_api;
pub mod metadata;
pub mod metrics;
pub mod offsets_store;
pub mod produce;
pub mod producer_ids;
pub mod server;
pub mod shard;
pub mod wire;

pub use config::Config;
pub use server::run;
