//! End-to-end tests: the real `runnel` binary, real clients (librdkafka through the rdkafka
//! crate, kcat, confluent-kafka and kafka-python), real files.

mod bad_requests;
mod bench_tool;
mod clients;
mod cluster;
mod common;
mod compaction;
mod configs;
mod crash_loop;
mod differential;
mod durability;
mod full_disk;
mod groups;
mod hostile;
mod idempotence;
mod kafka_tools;
mod protocol;
mod replication;
mod storage_errors;
mod tools;
mod transactions;
