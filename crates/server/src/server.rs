//! Broker start and stop: the data dir, the shard pool, the listeners, signals, and the
//! clean-shutdown checkpoint.
//!
//! Shutdown runs in phases every shard passes together (counted in `Shared::phase`):
//! 0. stop accepting and reading; answer every request already started (it may need other
//!    shards, which all keep serving their channels meanwhile);
//! 1. close every log (flush, write indexes) and report recovery points;
//! 2. leave. The main thread then writes the checkpoints and the clean-shutdown marker.

use crate::config::Config;
use crate::shard::{Latch, Shard, ShardMsg, Shared, Startup};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use runnel_log::checkpoint::{self, Offsets};
use runnel_metadata as metadata;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// glommio's registered buffer per executor. Runnel does its file I/O on its own ring and
/// needs little; glommio refuses less than 512 KiB.
const IO_MEMORY: usize = 512 << 10;
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one shard hands back when it stops.
struct ShardExit {
    recovery_points: Offsets,
    log_start_offsets: Offsets,
    high_watermarks: Offsets,
    cleaner_offsets: Offsets,
    clean: bool,
}

/// Runs the broker until SIGTERM or SIGINT. Errors are for the operator (exit code 1).
pub fn run(config: Config) -> Result<(), String> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    crate::partitions::remove_deleted_dirs(&data_dir);
    let signalled = Arc::new(AtomicBool::new(false));
    install_signal_handler(signalled.clone())?;
    let mut props = metadata::MetaProperties::read(&data_dir)?;
    if let Some(n) = props.node_id.filter(|n| *n != config.node_id) {
        return Err(format!(
            "{} belongs to node {n}, not to --node-id {}",
            data_dir.display(),
            config.node_id
        ));
    }
    let dir_id = *props.directory_id.get_or_insert_with(metadata::random_id);
    props.node_id = Some(config.node_id);
    props.write(&data_dir)?;

    // Port 0: reserve a port all shards can share (SO_REUSEPORT) before they bind it.
    let reserve = reserve_listen_addr(config.listen)?;
    let listen = reserve
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .expect("inet");
    let (advertised_host, advertised_port) = advertised(&config, listen)?;
    metadata::cluster::validate_name("the advertised host", &advertised_host)?;
    let (controller, mut applied) = start_controller(&config, &data_dir, &props)?;
    let incarnation = u64::from_le_bytes(metadata::random_id()[..8].try_into().expect("8"));
    let snapshot = crate::cluster::join(
        &config,
        &controller,
        &mut applied,
        &signalled,
        metadata::BrokerMeta {
            id: config.node_id,
            host: advertised_host.clone(),
            port: advertised_port,
            rack: config.rack.clone(),
            dir_id,
            incarnation,
            state: metadata::BrokerState::Active,
        },
        props.cluster_id.clone(),
    )?;
    match &props.cluster_id {
        Some(c) if *c != snapshot.cluster_id => {
            return Err(format!(
                "{} belongs to cluster {c}, but the metadata quorum's cluster is {}",
                data_dir.display(),
                snapshot.cluster_id
            ))
        }
        Some(_) => {}
        None => {
            props.cluster_id = Some(snapshot.cluster_id.clone());
            props.write(&data_dir)?;
        }
    }
    remove_stray_partitions(&data_dir, &snapshot, config.node_id);
    let marker = data_dir.join(checkpoint::CLEAN_SHUTDOWN_MARKER);
    let clean_shutdown = take_clean_shutdown_marker(&data_dir, &marker)?;
    let recovery_points = read_checkpoint(&data_dir, checkpoint::RECOVERY_POINT_CHECKPOINT)?;
    let log_start_offsets = read_checkpoint(&data_dir, checkpoint::LOG_START_OFFSET_CHECKPOINT)?;
    let high_watermarks = read_checkpoint(&data_dir, checkpoint::REPLICATION_OFFSET_CHECKPOINT)?;
    let cleaner_offsets = read_checkpoint(&data_dir, checkpoint::CLEANER_OFFSET_CHECKPOINT)?;
    let nr_shards = config.shards();
    check_memlock(nr_shards);
    match runnel_runtime::pagewrite::enable_for(&data_dir) {
        Ok((fs, inline)) => tracing::info!(
            "data dir on {fs}: page-cache writes {}",
            if inline {
                "inline on the shards while memory is not near the dirty limits"
            } else {
                "through io_uring"
            }
        ),
        Err(e) => tracing::warn!(
            "cannot tell the data dir's file system ({e}): page-cache writes through io_uring"
        ),
    }
    let open_file_limit = crate::limits::raise_open_file_limit();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| crate::limits::default_max_connections(open_file_limit));
    if u64::from(max_connections) * 3 > open_file_limit {
        tracing::warn!(
            "--max-connections={max_connections} can take more descriptors than the open-file \
             limit ({open_file_limit}) allows: raise it (LimitNOFILE= under systemd)"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        shards = nr_shards,
        node = config.node_id,
        cluster = %snapshot.cluster_id,
        data_dir = %data_dir.display(),
        topics = snapshot.topics.len(),
        clean_shutdown,
        open_file_limit,
        max_connections,
        "starting runnel"
    );
    let conn_limits = Arc::new(crate::limits::ConnLimits::new(
        max_connections,
        config.max_connections_per_ip,
    ));
    let shared = Arc::new(Shared {
        defaults: config.default_log_config(),
        counters: (0..nr_shards).map(|_| Default::default()).collect(),
        cleaner_ratios: (0..nr_shards).map(|_| Default::default()).collect(),
        page_writes: (0..nr_shards).map(|_| Default::default()).collect(),
        config,
        nr_shards,
        advertised_host,
        advertised_port,
        listen,
        data_dir: data_dir.clone(),
        startup: Startup {
            snapshot: (*snapshot).clone(),
            clean_shutdown,
            recovery_points,
            log_start_offsets,
            high_watermarks,
            cleaner_offsets,
        },
        controller,
        applied: std::sync::Mutex::new(Some(applied)),
        incarnation,
        signalled,
        stop: AtomicBool::new(false),
        phase: Default::default(),
        ready: AtomicUsize::new(0),
        listening: AtomicUsize::new(0),
        conn_limits,
    });

    let mesh = MeshBuilder::<ShardMsg, _>::full(nr_shards, 1024);
    let pool = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(nr_shards, None))
        .name("runnel-shard")
        .io_memory(IO_MEMORY)
        .on_all_shards({
            let shared = shared.clone();
            move || shard_main(shared, mesh)
        })
        .map_err(|e| format!("cannot start the shard executors: {e}"))?;

    while shared.listening.load(Ordering::Acquire) < nr_shards
        && !shared.stop.load(Ordering::Acquire)
        && !shared.signalled.load(Ordering::Acquire)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(reserve);
    if shared.listening.load(Ordering::Acquire) == nr_shards {
        tracing::info!(listen = %listen, "runnel is ready");
    }

    let mut recovery_points = Offsets::new();
    let mut log_start_offsets = Offsets::new();
    let mut high_watermarks = Offsets::new();
    let mut cleaner_offsets = Offsets::new();
    let mut clean = true;
    let mut first_error = None;
    for r in pool.join_all() {
        match r {
            Ok(Ok(exit)) => {
                recovery_points.extend(exit.recovery_points);
                log_start_offsets.extend(exit.log_start_offsets);
                high_watermarks.extend(exit.high_watermarks);
                cleaner_offsets.extend(exit.cleaner_offsets);
                clean &= exit.clean;
            }
            Ok(Err(e)) => {
                clean = false;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                clean = false;
                first_error.get_or_insert(format!("a shard failed: {e:?}"));
            }
        }
    }
    shared.controller.stop();
    if let Some(e) = first_error {
        return Err(e);
    }
    checkpoint::write_blocking(
        &data_dir.join(checkpoint::RECOVERY_POINT_CHECKPOINT),
        &recovery_points,
    )
    .and_then(|_| {
        checkpoint::write_blocking(
            &data_dir.join(checkpoint::LOG_START_OFFSET_CHECKPOINT),
            &log_start_offsets,
        )
    })
    .and_then(|_| {
        checkpoint::write_blocking(
            &data_dir.join(checkpoint::REPLICATION_OFFSET_CHECKPOINT),
            &high_watermarks,
        )
    })
    .and_then(|_| {
        checkpoint::write_blocking(
            &data_dir.join(checkpoint::CLEANER_OFFSET_CHECKPOINT),
            &cleaner_offsets,
        )
    })
    .map_err(|e| format!("cannot write checkpoints: {e}"))?;
    if clean {
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::File::open(&data_dir)?.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        tracing::info!("runnel stopped cleanly");
    } else {
        tracing::warn!("runnel stopped; a partition failed to close, the next start recovers");
    }
    Ok(())
}

/// Whether the last shutdown was clean, and from now on it is not: the marker is removed and
/// the removal made durable before any log is opened, so a crash at any later moment (a log
/// half open, clients already writing) makes the next start recover. A stale marker would
/// let the next start trust torn tails and skip every CRC check.
fn take_clean_shutdown_marker(data_dir: &Path, marker: &Path) -> Result<bool, String> {
    match std::fs::remove_file(marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot remove {}: {e}", marker.display())),
    }
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", data_dir.display()))?;
    Ok(true)
}

async fn shard_main(
    shared: Arc<Shared>,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
) -> Result<ShardExit, String> {
    // If this shard fails or panics anywhere below, the others must not wait for it forever.
    let mut guard = PhaseGuard {
        shared: shared.clone(),
        passed: 0,
    };
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("cannot join the shard mesh: {e}"))?;
    let shard = new_shard(&shared, senders);
    let _ = shared.page_writes[shard.id].set(runnel_runtime::ring().write_stats());
    // Serve the other shards' messages, each in a task of its own.
    for (_, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = stream.recv().await {
                glommio::spawn_local(crate::inbox::handle(shard.clone(), msg)).detach();
            }
        })
        .detach();
    }
    if let Err(e) = open_partitions(&shard).await {
        shared.stop.store(true, Ordering::Release);
        tracing::error!(shard = shard.id, "{e}");
        close_logs(&shard).await;
        for phase in 0..3 {
            wait_phase(&shared, phase).await;
            guard.passed += 1;
        }
        return Err(e);
    }
    wait_until_all_ready(&shared).await;
    if shard.id == 0 {
        // From now on shard 0 applies what the metadata log commits.
        let applied = shared.applied.lock().ok().and_then(|mut a| a.take());
        if let Some(applied) = applied {
            glommio::spawn_local(crate::admin::apply_updates(shard.clone(), applied)).detach();
        }
    }
    let accept = start_listeners(&shard);
    if shared.config.test_panic_shard == Some(shard.id) {
        glommio::spawn_local(async { panic!("--test-panic-shard asked for a panic") }).detach();
    }
    let background = glommio::spawn_local(background(shard.clone())).detach();
    let groups = glommio::spawn_local(crate::groups::timers(shard.clone())).detach();
    let txn_timers = glommio::spawn_local(crate::txns::timers(shard.clone())).detach();
    let cleaner = shared
        .config
        .log_cleaner_enable
        .then(|| glommio::spawn_local(crate::cleaner::run(shard.clone())).detach());
    let checkpoints =
        (shard.id == 0).then(|| glommio::spawn_local(checkpoints(shard.clone())).detach());

    // Run until told to stop. Shard 0 first hands this broker's leaderships to others
    // (controlled shutdown), serving meanwhile, then stops every shard.
    while !shared.stop.load(Ordering::Acquire) {
        if shard.id == 0 && shared.signalled.load(Ordering::Acquire) {
            crate::cluster::controlled_shutdown(&shard).await;
            shared.stop.store(true, Ordering::Release);
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    shard.stopping.set();
    if let Some(a) = accept {
        a.await;
    }
    background.cancel();
    groups.cancel();
    txn_timers.cancel();
    if let Some(c) = cleaner {
        // (A pass stopped mid-swap is completed by recovery at the next start.)
        c.cancel();
    }
    if let Some(c) = checkpoints {
        c.cancel();
    }
    drain_connections(&shard).await;
    wait_phase(&shared, 0).await;
    guard.passed += 1;
    let exit = close_logs(&shard).await;
    wait_phase(&shared, 1).await;
    guard.passed += 1;
    shard.mesh.close();
    wait_phase(&shared, 2).await;
    guard.passed += 1;
    Ok(exit)
}

/// The shard of this executor, with an empty snapshot and no partitions yet (shard 0 also
/// holds the producer id allocator).
fn new_shard(
    shared: &Arc<Shared>,
    senders: glommio::channels::channel_mesh::Senders<ShardMsg>,
) -> Rc<Shard> {
    let config = &shared.config;
    let shard = Rc::new(Shard {
        id: senders.peer_id(),
        shared: shared.clone(),
        snapshot: RefCell::new(Arc::new(metadata::Snapshot::default())),
        partitions: RefCell::new(HashMap::new()),
        mesh: senders,
        stopping: Latch::default(),
        connections: Cell::new(0),
        request_budget: Rc::new(glommio::sync::Semaphore::new(
            config
                .queued_max_request_bytes
                .max(u64::from(config.max_request_bytes)),
        )),
        producer_ids: RefCell::new(None),
        producer_ids_lock: glommio::sync::Semaphore::new(1),
        checkpoint_lock: glommio::sync::Semaphore::new(1),
        coordinator: runnel_group::Coordinator::new(runnel_group::GroupConfig {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            offsets_retention_ms: config.offsets_retention_ms,
            durable_commits: config.sync_on_acks_all,
            consumer: runnel_group::consumer::ConsumerConfig {
                heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
                session_timeout_ms: config.group_consumer_session_timeout_ms,
            },
        }),
        txn: runnel_group::txn::TxnCoordinator::new(config.transaction_max_timeout_ms),
        txn_checks: RefCell::new(HashMap::new()),
        leading: RefCell::new(HashMap::new()),
        following: RefCell::new(HashMap::new()),
        fetchers: RefCell::new(Default::default()),
        replacing: RefCell::new(HashMap::new()),
        offline_reported: RefCell::new(HashMap::new()),
        unopened: RefCell::new(HashMap::new()),
        leader_throttle: crate::throttle::Throttle::new(
            shared.config.leader_replication_throttled_rate,
            shared.nr_shards,
        ),
        follower_throttle: crate::throttle::Throttle::new(
            shared.config.follower_replication_throttled_rate,
            shared.nr_shards,
        ),
    });
    if shard.id == 0 {
        *shard.producer_ids.borrow_mut() = Some(Default::default());
    }
    shard
}

/// Opens this shard's partitions of the startup snapshot and loads the groups of the
/// `__consumer_offsets` partitions it leads.
async fn open_partitions(shard: &Rc<Shard>) -> Result<(), String> {
    let snapshot = Arc::new(shard.shared.startup.snapshot.clone());
    crate::partitions::apply_metadata(shard, snapshot, true).await?;
    // Every partition this shard leads is loaded: the coordinator may answer.
    shard.coordinator.load(HashMap::new());
    Ok(())
}

/// Says this shard is ready, then waits for the others (or a stop), so no shard takes
/// clients before every partition is open.
async fn wait_until_all_ready(shared: &Shared) {
    shared.ready.fetch_add(1, Ordering::AcqRel);
    while shared.ready.load(Ordering::Acquire) < shared.nr_shards {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// Binds the client listener (and on shard 0 the metrics listener) and starts accepting;
/// the returned task ends when the shard stops. None (and a stop) if the port cannot be had.
fn start_listeners(shard: &Rc<Shard>) -> Option<glommio::task::JoinHandle<()>> {
    let shared = &shard.shared;
    // The metrics listener first: once every client listener is bound, the broker says it
    // is ready, and both answer.
    if shard.id == 0 {
        if let Some(addr) = shared.config.metrics_listen {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    tracing::info!(%addr, "serving metrics");
                    glommio::spawn_local(crate::metrics::serve(shard.clone(), l)).detach();
                }
                Err(e) => tracing::error!("cannot serve metrics on {addr}: {e}"),
            }
        }
    }
    let listener = match TcpListener::bind(shared.listen) {
        Ok(l) => {
            shared.listening.fetch_add(1, Ordering::AcqRel);
            Some(l)
        }
        Err(e) => {
            tracing::error!(shard = shard.id, "cannot listen on {}: {e}", shared.listen);
            shared.stop.store(true, Ordering::Release);
            None
        }
    };
    let listener = listener?;
    let shard = shard.clone();
    Some(
        glommio::spawn_local(async move {
            loop {
                let accepted =
                    futures_lite::future::or(async { Some(listener.accept().await) }, async {
                        shard.stopping.wait().await;
                        None
                    })
                    .await;
                match accepted {
                    None => break,
                    Some(Ok(stream)) => {
                        let peer = stream.peer_addr();
                        let ip = peer
                            .as_ref()
                            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                                a.ip()
                            });
                        match shard.shared.conn_limits.admit(ip) {
                            Ok(admission) => {
                                glommio::spawn_local(crate::conn::serve(
                                    shard.clone(),
                                    stream,
                                    admission,
                                ))
                                .detach();
                            }
                            Err(cause) => {
                                // Closed at once: the client sees the connection end and
                                // retries (or tries another broker).
                                drop(stream);
                                crate::limits::hit(shard.counters(), cause, format_args!("{ip}"));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        // EMFILE and the like: count, say so once in a while, back off,
                        // keep serving.
                        crate::limits::hit(
                            shard.counters(),
                            crate::limits::Cause::AcceptFailed,
                            format_args!("{e}"),
                        );
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .detach(),
    )
}

/// Waits (up to DRAIN_TIMEOUT) for the connections to answer what they started.
async fn drain_connections(shard: &Shard) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while shard.connections.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections.get() > 0 {
        tracing::warn!(
            shard = shard.id,
            "{} connections still busy at shutdown",
            shard.connections.get()
        );
    }
}

/// Stops the broker and counts this shard through the shutdown phases it has not passed, when
/// a shard leaves early (an error or a panic): the others then finish instead of waiting.
struct PhaseGuard {
    shared: Arc<Shared>,
    passed: usize,
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if self.passed < self.shared.phase.len() {
            self.shared.stop.store(true, Ordering::Release);
            for phase in &self.shared.phase[self.passed..] {
                phase.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Marks this shard done with `phase` and waits for the others, serving their messages
/// meanwhile (this is an await, not a blocking wait).
async fn wait_phase(shared: &Shared, phase: usize) {
    shared.phase[phase].fetch_add(1, Ordering::AcqRel);
    while shared.phase[phase].load(Ordering::Acquire) < shared.nr_shards {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

async fn close_logs(shard: &Rc<Shard>) -> ShardExit {
    let logs: Vec<_> = shard.partitions.borrow_mut().drain().collect();
    let mut exit = ShardExit {
        recovery_points: Offsets::new(),
        log_start_offsets: Offsets::new(),
        high_watermarks: Offsets::new(),
        cleaner_offsets: Offsets::new(),
        clean: true,
    };
    for ((topic, partition), log) in logs {
        if let Err(e) = log.close().await {
            tracing::error!(%topic, partition, "closing the log failed: {e}");
            exit.clean = false;
        }
        exit.recovery_points
            .insert((topic.to_string(), partition), log.recovery_point());
        exit.log_start_offsets
            .insert((topic.to_string(), partition), log.log_start_offset());
        exit.high_watermarks
            .insert((topic.to_string(), partition), log.high_watermark());
        if log.config().compact {
            exit.cleaner_offsets
                .insert((topic.to_string(), partition), log.cleaner_checkpoint());
        }
    }
    exit
}

/// Deletes partition directories of topics deleted while this broker was down (their
/// `partition.metadata` names a topic id the cluster no longer has).
fn remove_stray_partitions(data_dir: &Path, snapshot: &metadata::Snapshot, me: i32) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = crate::partitions::dir_topic_id(&path) else {
            continue;
        };
        // A partition reassigned away from this broker while it was down is stray too.
        let why = match snapshot.topic_by_id(&id) {
            None => "deleting a partition of a deleted topic",
            Some(t) => {
                let p = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.rsplit_once('-'))
                    .and_then(|(_, p)| p.parse::<i32>().ok());
                match p.and_then(|p| t.partition(p)) {
                    Some(pm) if pm.replicas.contains(&me) => continue,
                    Some(_) => "deleting a partition reassigned to other brokers",
                    None => "deleting a partition the topic no longer has",
                }
            }
        };
        {
            let mut doomed = path.clone().into_os_string();
            doomed.push(format!(".{}-delete", metadata::hex(&metadata::random_id())));
            tracing::info!(dir = %path.display(), "{why}");
            if let Err(e) = std::fs::rename(&path, &doomed) {
                tracing::warn!("cannot rename {}: {e}", path.display());
            }
        }
    }
    crate::partitions::remove_deleted_dirs(data_dir);
}

/// Opens the metadata log and starts this node's quorum member.
fn start_controller(
    config: &Config,
    data_dir: &Path,
    props: &metadata::MetaProperties,
) -> Result<
    (
        runnel_controller::Controller,
        futures_channel::mpsc::UnboundedReceiver<runnel_controller::Applied>,
    ),
    String,
> {
    let (voters, listen) = match &config.controller_quorum_voters {
        Some(v) => {
            let own = &v.0[&config.node_id];
            let listen = match config.controller_listen {
                Some(l) => l,
                None => std::net::ToSocketAddrs::to_socket_addrs(own.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        format!("cannot resolve this node's controller address {own}")
                    })?,
            };
            (v.0.clone(), Some(listen))
        }
        None => (
            std::iter::once((config.node_id, "local".to_string())).collect(),
            None,
        ),
    };
    let offsets_configs = crate::cluster::offsets_topic_configs();
    runnel_controller::Controller::start(runnel_controller::ControllerConfig {
        node_id: config.node_id,
        voters,
        listen,
        dir: data_dir.join(format!("{}-0", metadata::METADATA_TOPIC)),
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        cluster_id: props.cluster_id.clone(),
        offsets_topic: (
            config.offsets_topic_partitions,
            config.offsets_topic_replication_factor,
            offsets_configs,
        ),
        leader_imbalance_check_interval: Duration::from_millis(
            config.leader_imbalance_check_interval_ms,
        ),
        snapshot_interval_entries: config.metadata_snapshot_interval_entries,
    })
}

/// Retention, the flush.ms policy and the ISR check, off the request path.
async fn background(shard: Rc<Shard>) {
    let retention_every = shard.config().retention_check_interval_ms;
    let mut next_retention = runnel_now_ms() + retention_every as i64;
    let isr_every = (shard.config().replica_lag_time_max_ms / 2).clamp(100, 1000) as i64;
    let mut next_isr_check = runnel_now_ms() + isr_every;
    loop {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let now = runnel_now_ms();
        if now >= next_isr_check {
            next_isr_check = now + isr_every;
            crate::replication::shrink_lagging(&shard);
            let (records, bytes) = crate::replication::max_follower_lag(&shard);
            shard.counters().follower_max_lag_records.set(records);
            shard.counters().follower_max_lag_bytes.set(bytes);
        }
        let logs: Vec<_> = shard.partitions.borrow().values().cloned().collect();
        let offline = logs.iter().filter(|l| l.offline_reason().is_some()).count()
            + shard.unopened.borrow().len();
        shard.counters().offline_partitions.set(offline as u64);
        if offline > 0 || !shard.offline_reported.borrow().is_empty() {
            crate::replication::report_offline(&shard, &logs);
        }
        for log in &logs {
            if let Err(e) = log.flush_if_due(now).await {
                tracing::error!(
                    topic = log.topic(),
                    partition = log.partition(),
                    "flush failed: {e}"
                );
            }
        }
        if now >= next_retention {
            next_retention = now + retention_every as i64;
            for log in &logs {
                match log.apply_retention(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic = log.topic(),
                        partition = log.partition(),
                        segments = n,
                        log_start_offset = log.log_start_offset(),
                        "retention deleted segments"
                    ),
                    Err(e) => tracing::error!(
                        topic = log.topic(),
                        partition = log.partition(),
                        "retention failed: {e}"
                    ),
                }
            }
        }
    }
}

/// Shard 0 writes the data dir's checkpoints periodically from every shard's partitions (the
/// files are per data dir, so one writer), as Kafka's checkpoint threads do. The clean
/// shutdown writes them once more.
async fn checkpoints(shard: Rc<Shard>) {
    let every = Duration::from_millis(shard.config().checkpoint_interval_ms);
    loop {
        glommio::timer::sleep(every).await;
        if !crate::checkpoints::write(&shard).await {
            return; // shutting down
        }
    }
}

fn runnel_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn read_checkpoint(dir: &Path, name: &str) -> Result<Offsets, String> {
    match checkpoint::read(&dir.join(name)) {
        Ok(o) => Ok(o),
        Err(e) => {
            // A damaged checkpoint only costs a longer recovery: scan everything.
            tracing::warn!("ignoring {name}: {e}");
            Ok(Offsets::new())
        }
    }
}

/// One broker per data dir: a second one would corrupt the logs.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "{} is in use by another runnel process",
            dir.display()
        ));
    }
    Ok(f)
}

fn reserve_listen_addr(addr: SocketAddr) -> Result<socket2::Socket, String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .and_then(|s| {
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            Ok(s)
        })
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(s)
}

fn advertised(config: &Config, listen: SocketAddr) -> Result<(String, i32), String> {
    if let Some(a) = &config.advertised_listener {
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("--advertised-listener {a:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--advertised-listener {a:?} has a bad port"))?;
        return Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)));
    }
    let host = if listen.ip().is_unspecified() {
        // Listening everywhere: tell clients this host's name, as Kafka does.
        let name = hostname().unwrap_or_else(|| "localhost".into());
        tracing::info!(
            "advertising {name}:{} (set --advertised-listener to change)",
            listen.port()
        );
        name
    } else {
        listen.ip().to_string()
    };
    Ok((host, i32::from(listen.port())))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// glommio registers IO_MEMORY per executor, which counts against RLIMIT_MEMLOCK; without
/// room it silently falls back to unregistered buffers. Say so, with the fix.
fn check_memlock(shards: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let need = (shards * (IO_MEMORY + (256 << 10))) as u64;
    if !root && lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < need {
        tracing::warn!(
            "RLIMIT_MEMLOCK is {} bytes, {shards} shards want about {need}: io_uring buffer \
             registration will fall back. Raise it (systemd: LimitMEMLOCK=infinity, see deploy/)",
            lim.rlim_cur
        );
    }
}

fn install_signal_handler(signalled: Arc<AtomicBool>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("runnel-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                tracing::info!("{name}: stopping (finishing in-flight requests, flushing)");
                signalled.store(true, Ordering::Release);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
