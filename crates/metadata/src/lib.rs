//! Cluster metadata: the brokers, the topics with their ids, partitions, replicas, leaders
//! and config overrides ([`registry`]), the metadata log's commands and how they apply
//! ([`cluster`]), and which shard of a broker owns a partition ([`placement`]). Every
//! shard reads an immutable [`Snapshot`].

pub mod cluster;
pub mod placement;
mod registry;
pub mod topic_config;

pub use registry::*;
