//! The Runnel broker: thread-per-core shards speaking the Kafka protocol.
//!
//! ```text
//! client ─TCP─▶ conn (any shard) ─ dispatch ─▶ handlers::{produce, fetch, admin, groups, ...}
//!                   │                                  │ ShardMsg over the channel mesh
//!                   │                                  ▼
//!                   │                         owner shard: runnel_log::Log
//!                   ◀── Response parts: bytes + file ranges (spliced) ──┘
//! ```
//!
//! See ARCHITECTURE.md for the map and the invariants.

pub mod admin;
pub mod checkpoints;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod fetcher;
pub mod frame;
pub mod groups;
pub mod handlers;
pub mod inbox;
pub mod limits;
pub mod metrics;
pub mod offsets_store;
pub mod partitions;
pub mod peer;
pub mod producer_ids;
pub mod replication;
pub mod server;
pub mod shard;
pub mod throttle;
pub mod txns;

pub use config::Config;
pub use server::run;
