//! This broker in the cluster: joining the metadata quorum at start (registering, importing
//! a pre-quorum topic registry) and leaving it on SIGTERM (controlled shutdown).

use crate::config::Config;
use crate::shard::Shard;
use futures_lite::StreamExt;
use runnel_controller::{Answer, Applied, Controller};
use runnel_metadata::cluster::{code, Command};
use runnel_metadata::{self as metadata, BrokerMeta, Snapshot};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one attempt to register may take before it is proposed again.
const JOIN_ATTEMPT: Duration = Duration::from_secs(5);
/// How long a controlled shutdown waits for its leaderships to move.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// `__consumer_offsets`' configs, as Kafka's: compacted, 100 MiB segments (and, Runnel's
/// own, kept forever by retention: compaction alone decides what goes).
pub fn offsets_topic_configs() -> std::collections::BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact".to_string()),
        ("retention.ms", "-1".to_string()),
        ("segment.bytes", (100u64 << 20).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Registers this broker (and imports `runnel-topics`, the registry of a broker from before
/// the metadata log, on its first start since): blocks until the quorum has applied it,
/// which also means every earlier metadata change has applied here. Returns the snapshot
/// the shards start from. Started before the shards exist, so it hands out the answers of
/// what applies meanwhile itself.
pub fn join(
    config: &Config,
    controller: &Controller,
    applied: &mut futures_channel::mpsc::UnboundedReceiver<Applied>,
    signalled: &AtomicBool,
    me: BrokerMeta,
    cluster_id: Option<String>,
) -> Result<Arc<Snapshot>, String> {
    let legacy = metadata::load_legacy_topics(&config.data_dir)?;
    let mut commands = vec![
        // Names a new cluster (the existing id of a data dir from before the quorum);
        // ignored once the cluster has a name.
        Command::InitCluster {
            cluster_id: cluster_id.unwrap_or_else(|| metadata::base64_id(&metadata::random_id())),
        },
        Command::RegisterBroker(me.clone()),
    ];
    // __consumer_offsets at once when this broker alone is enough for its replication
    // factor (a single node); TOPIC_ALREADY_EXISTS or INVALID_REPLICATION_FACTOR otherwise,
    // and the active controller creates it once enough brokers have registered.
    let voters = config
        .controller_quorum_voters
        .as_ref()
        .map_or(1, |v| v.0.len());
    let offsets_configs = offsets_topic_configs();
    let offsets = Command::CreateTopic {
        name: runnel_metadata::cluster::OFFSETS_TOPIC.into(),
        id: metadata::random_id(),
        partitions: config.offsets_topic_partitions,
        replication_factor: config.offsets_topic_replication_factor.min(voters as i16),
        assignment: None,
        configs: offsets_configs,
    };
    for t in legacy.iter().flat_map(|l| l.values()) {
        commands.push(Command::CreateTopic {
            name: t.name.to_string(),
            id: t.id,
            partitions: t.partitions,
            replication_factor: 1,
            assignment: Some(vec![vec![me.id]; t.partitions as usize]),
            configs: t.overrides.clone(),
        });
    }
    // After the import, which may carry the data dir's own __consumer_offsets.
    commands.push(offsets);
    // A single broker's producer ids from before the quorum: the quorum's counter moves
    // past them, so none is handed out again.
    let pid_file = config.data_dir.join(crate::producer_ids::FILE);
    let legacy_pids = match std::fs::read_to_string(&pid_file) {
        Ok(text) => Some(
            text.trim()
                .parse::<i64>()
                .map_err(|e| format!("{}: {e}", pid_file.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", pid_file.display())),
    };
    if let Some(end) = legacy_pids.filter(|e| *e > 0) {
        commands.push(Command::AllocateProducerIds { count: end });
    }
    // A cluster whose __consumer_offsets predates the log cleaner gets it compacted (its
    // old re-append compaction is gone); refused, and harmless, while the topic does not
    // exist yet.
    commands.push(Command::AlterConfigs {
        resource: metadata::cluster::ConfigResource::Topic(
            runnel_metadata::cluster::OFFSETS_TOPIC.into(),
        ),
        replace: false,
        changes: [("cleanup.policy".to_string(), Some("compact".to_string()))].into(),
    });
    let mut latest: Option<Arc<Snapshot>> = None;
    let started = Instant::now();
    let mut said = Instant::now();
    let results = loop {
        if signalled.load(Ordering::Acquire) {
            return Err("stopped before joining the metadata quorum".into());
        }
        let mut reply = controller.propose(commands.clone(), JOIN_ATTEMPT);
        enum Event {
            Applied(Option<Applied>),
            Reply(Result<Answer, futures_channel::oneshot::Canceled>),
        }
        let answer = loop {
            let ev = futures_lite::future::block_on(futures_lite::future::or(
                async { Event::Applied(applied.next().await) },
                async { Event::Reply((&mut reply).await) },
            ));
            match ev {
                Event::Applied(Some(a)) => {
                    latest = Some(a.snapshot);
                    for (r, answer) in a.replies {
                        let _ = r.send(answer);
                    }
                }
                Event::Applied(None) => return Err("the metadata quorum member stopped".into()),
                Event::Reply(r) => break r,
            }
        };
        match answer {
            Ok(Ok(results)) => break results,
            Ok(Err((_, why))) => {
                if said.elapsed() >= Duration::from_secs(5) {
                    said = Instant::now();
                    tracing::info!(
                        waited_s = started.elapsed().as_secs(),
                        "waiting for the metadata quorum: {why}"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => return Err("the metadata quorum member stopped".into()),
        }
    };
    let snapshot = latest.ok_or("registered without a snapshot")?;
    if let Some(Err((_, why))) = results.get(1) {
        return Err(format!("the metadata quorum refused this broker: {why}"));
    }
    if let Some(legacy) = &legacy {
        for (t, r) in legacy.values().zip(results.iter().skip(2)) {
            match r {
                Ok(_) => {}
                Err((code::TOPIC_ALREADY_EXISTS, _))
                    if snapshot.topic(&t.name).is_some_and(|s| s.id == t.id) => {}
                Err((_, why)) => tracing::warn!(topic = %t.name, "not imported: {why}"),
            }
        }
        let from = config.data_dir.join(metadata::TOPICS_FILE);
        let to = from.with_extension("imported");
        std::fs::rename(&from, &to)
            .map_err(|e| format!("cannot rename {}: {e}", from.display()))?;
        tracing::info!(
            topics = legacy.len(),
            "imported {} into the metadata log (kept as {})",
            from.display(),
            to.display()
        );
    }
    if legacy_pids.is_some() {
        let to = pid_file.with_extension("imported");
        std::fs::rename(&pid_file, &to)
            .map_err(|e| format!("cannot rename {}: {e}", pid_file.display()))?;
    }
    tracing::info!(
        node = me.id,
        brokers = snapshot.live_brokers().count(),
        controller = snapshot.controller_id,
        "joined the cluster"
    );
    Ok(snapshot)
}

/// Hands this broker's partition leaderships to other in-sync replicas before it stops,
/// so clients move on without errors: Kafka's controlled shutdown. Shard 0, on SIGTERM.
pub async fn controlled_shutdown(shard: &Rc<Shard>) {
    let voters = shard
        .config()
        .controller_quorum_voters
        .as_ref()
        .map_or(1, |v| v.0.len());
    let me = shard.node_id();
    let leads = |s: &Snapshot| {
        s.topics
            .values()
            .flat_map(|t| t.assignment.iter())
            .filter(|p| p.leader == me)
            .count()
    };
    if voters == 1 || leads(&shard.snapshot()) == 0 {
        return;
    }
    tracing::info!(
        leaderships = leads(&shard.snapshot()),
        "controlled shutdown: moving leaderships to other brokers"
    );
    let reply = shard.shared.controller.propose(
        vec![Command::ShutdownBroker {
            id: me,
            incarnation: shard.shared.incarnation,
        }],
        SHUTDOWN_TIMEOUT,
    );
    match reply.await {
        Ok(Ok(_)) => tracing::info!(
            still_leading = leads(&shard.snapshot()),
            "controlled shutdown done"
        ),
        Ok(Err((_, why))) => tracing::warn!("controlled shutdown failed: {why}"),
        Err(_) => tracing::warn!("controlled shutdown: no answer"),
    }
}
