//! One module per API family. A handler decodes its request, asks the shards that own the
//! partitions or groups (through [`crate::shard::Shard::call`]), and encodes the answer for
//! the request's version. Handlers use the shard and the domain crates; nothing below them
//! calls back up into a handler or the dispatcher.

pub mod admin;
pub mod configs;
pub mod consumer_groups;
pub mod fetch;
pub mod groups;
pub mod log_dirs;
pub mod metadata;
pub mod produce;
pub mod producers;
pub mod reassign;
pub mod telemetry;
pub mod topic_partitions;
pub mod txn;
