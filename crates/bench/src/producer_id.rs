//! The producer sessions runnel-bench can produce as: idempotent (a producer id and epoch,
//! sequences per partition) and transactional (a transactional id, its coordinator, a
//! transaction every N batches), with Kafka's own requests.

use crate::client::{Conn, Error};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

/// Answers that mean "ask again shortly": a coordinator loading or moving, a transaction
/// still ending, the transaction log being created.
const RETRIABLE: [i16; 4] = [14, 15, 16, 51];

/// A producer id and epoch, and for a transactional producer its coordinator.
pub struct Session {
    pub producer_id: i64,
    pub epoch: i16,
    pub transactional_id: Option<String>,
    coordinator: Option<Conn>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Retries `f` while it answers a retriable code, for up to 30 s.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<(i16, T), Error>) -> Result<T, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = f()?;
        if code == 0 {
            return Ok(v);
        }
        if !RETRIABLE.contains(&code) || Instant::now() > deadline {
            return Err(format!("{what} failed: error {code}"));
        }
        // (Kafka's clients wait 20 ms before adding partitions again after a commit.)
        std::thread::sleep(Duration::from_millis(if code == 51 { 5 } else { 50 }));
    }
}

impl Session {
    /// InitProducerId through `any` (a broker), or, with a transactional id, through the
    /// id's coordinator found from `any`.
    pub fn start(any: &str, transactional_id: Option<String>) -> Result<Session, Error> {
        let coordinator = match &transactional_id {
            None => None,
            Some(id) => {
                let mut c = Conn::connect(any)?;
                let addr = retry("FindCoordinator", || {
                    let r: FindCoordinatorResponse = c.call(
                        ApiKey::FindCoordinator,
                        3,
                        &FindCoordinatorRequest::default()
                            .with_key(sb(id))
                            .with_key_type(1),
                    )?;
                    Ok((r.error_code, format!("{}:{}", r.host, r.port)))
                })?;
                Some(Conn::connect(&addr)?)
            }
        };
        let mut any_conn = match coordinator {
            Some(_) => None,
            None => Some(Conn::connect(any)?),
        };
        let mut s = Session {
            producer_id: -1,
            epoch: -1,
            transactional_id,
            coordinator,
        };
        let id = s.transactional_id.clone();
        let conn = match (&mut s.coordinator, &mut any_conn) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => unreachable!("one connection"),
        };
        let (pid, epoch) = retry("InitProducerId", || {
            let r: InitProducerIdResponse = conn.call(
                ApiKey::InitProducerId,
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(id.as_deref().map(|t| TransactionalId(sb(t))))
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )?;
            Ok((r.error_code, (r.producer_id.0, r.producer_epoch)))
        })?;
        s.producer_id = pid;
        s.epoch = epoch;
        Ok(s)
    }

    /// AddPartitionsToTxn: `partitions` of `topic` join the open transaction.
    pub fn add_partitions(&mut self, topic: &str, partitions: &[i32]) -> Result<(), Error> {
        let (id, pid, epoch) = (self.id()?, self.producer_id, self.epoch);
        let c = self.coordinator.as_mut().expect("a transactional session");
        retry("AddPartitionsToTxn", || {
            let r: AddPartitionsToTxnResponse = c.call(
                ApiKey::AddPartitionsToTxn,
                3,
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(sb(&id)))
                    .with_v3_and_below_producer_id(ProducerId(pid))
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(sb(topic)))
                        .with_partitions(partitions.to_vec())]),
            )?;
            let code = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            Ok((code, ()))
        })
    }

    /// EndTxn: commits the open transaction.
    pub fn commit(&mut self) -> Result<(), Error> {
        let (id, pid, epoch) = (self.id()?, self.producer_id, self.epoch);
        let c = self.coordinator.as_mut().expect("a transactional session");
        retry("EndTxn", || {
            let r: EndTxnResponse = c.call(
                ApiKey::EndTxn,
                3,
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(sb(&id)))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_committed(true),
            )?;
            Ok((r.error_code, ()))
        })
    }

    fn id(&self) -> Result<String, Error> {
        self.transactional_id
            .clone()
            .ok_or_else(|| "not a transactional session".to_string())
    }
}
