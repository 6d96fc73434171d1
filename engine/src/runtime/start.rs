//! Starting a node's parts from its configuration: members resolved and checked, the socket
//! bound, the member key and access tokens read (with a warning for each left open), the
//! applier started from the newest good snapshot. Each returns a clear error naming what was
//! wrong; none starts a thread but the snapshot writer's and the receiver's.

use super::*;

/// Resolves the members: this node's own address must resolve (it binds it); others may not
/// exist yet (containers and pods start before their DNS entries) and a resolver thread keeps
/// trying. Returns every member's address so far and this node's.
pub(super) fn resolve_members(
    config: &Config,
) -> Result<(Vec<Option<SocketAddr>>, SocketAddr), StartError> {
    let id = config.node.id;
    let members: Vec<Option<SocketAddr>> =
        config.cluster.members.iter().map(|m| resolve(m)).collect();
    let Some(bind) = members[id as usize] else {
        return Err(StartError::Config(ConfigError::Value {
            key: format!("cluster.members[{id}]"),
            value: config.cluster.members[id as usize].clone(),
            allowed: "this node's own address, resolvable at start".into(),
        }));
    };
    // Members that resolve now must be distinct (`localhost` and `127.0.0.1` with one port
    // are one member twice); later resolutions are checked by the resolver thread.
    let known: Vec<(String, SocketAddr)> = config
        .cluster
        .members
        .iter()
        .zip(&members)
        .filter_map(|(n, a)| a.map(|a| (n.clone(), a)))
        .collect();
    crate::config::check_distinct(
        &known.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        &known.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
    )?;
    for (i, m) in members.iter().enumerate() {
        if m.is_none() {
            tracing::warn!(
                "node {id}: member {i} ({}) does not resolve yet; retrying in the background",
                config.cluster.members[i]
            );
        }
    }
    Ok((members, bind))
}

/// Binds this node's UDP socket (members and clients) with the configured client limits.
pub(super) fn bind_transport(
    config: &Config,
    bind: SocketAddr,
    members: &[Option<SocketAddr>],
) -> Result<UdpTransport, StartError> {
    let mut transport = UdpTransport::bind_partial(
        bind,
        members.to_vec(),
        config.cluster.id,
        config.transport.max_datagram_bytes,
    )
    .map_err(|source| StartError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    transport.set_client_limits(
        config.transport.max_client_addresses,
        config.transport.client_idle_ms.saturating_mul(1_000_000),
    );
    Ok(transport)
}

/// The member key's sealer and the access tokens, saying once for each that is not set what
/// that leaves open.
pub(super) fn authentication(
    config: &Config,
    id: u32,
) -> Result<(Option<Sealer>, crate::access::Access), StartError> {
    let sealer = config.member_keys()?.map(|keys| {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Sealer::new(id, config.cluster.members.len() as u32, keys, epoch)
    });
    if sealer.is_none() {
        tracing::warn!(
            "node {id}: no member key ([transport] member_key_file or RAFTLINE_MEMBER_KEY): members are not authenticated, and anyone who can send this node a datagram can pose as a member"
        );
    }
    let access = config.access()?;
    if !access.clients_checked {
        tracing::warn!(
            "node {id}: no client token ([access] client_token_file or RAFTLINE_CLIENT_TOKEN): any source may open a session, and one that learns a session id may re-bind it"
        );
    }
    if access.admin.is_none() {
        tracing::warn!(
            "node {id}: no admin token ([access] admin_token_file or RAFTLINE_ADMIN_TOKEN): any source may describe, snapshot, transfer or shut down the cluster"
        );
    }
    Ok((sealer, access))
}

/// The node's settings, from the configuration's sections.
pub(super) fn node_config(config: &Config) -> NodeConfig {
    NodeConfig {
        consensus: config.consensus_config(),
        log: config.log_config(),
        snapshot_interval_bytes: config.snapshot.interval_kib * 1024,
        session_timeout_ns: config.session.timeout_ms * 1_000_000,
        sessions: config.session_limits(),
        max_install_bytes: config.snapshot.max_install_mib.saturating_mul(1 << 20),
        recover_vote: config.node.recover_vote,
    }
}

/// The applier, started from the newest snapshot in `dir` that passes its checksum (recovery
/// then replays the log from its position), and the writer of the snapshots to come. Snapshot
/// files live next to the log's segments (the node reads them through its disk to send a
/// follower that needs one, and writes the ones it installs).
pub(super) fn start_applier<S: Service>(
    service: S,
    dir: &std::path::Path,
    id: u32,
    dedicated: bool,
) -> Result<(Applier<S>, SnapshotWriter), StartError> {
    let snapshot_dir = dir.to_path_buf();
    remove_retired_segments(dir);
    let mut applier = Applier::new(service);
    let latest = crate::service::snapshot::load_latest(
        &mut crate::sys::files::DirFiles::new(&snapshot_dir),
        |name, why| {
            tracing::warn!(
                "node {id}: skipping snapshot {}: {why}; trying the one before",
                snapshot_dir.join(name).display()
            )
        },
    )
    .map_err(|e| StartError::Snapshot {
        dir: snapshot_dir.display().to_string(),
        message: e.to_string(),
    })?;
    if let Some((position, _)) = &latest {
        tracing::info!(
            "node {id}: starting from the snapshot at log position {position}, replaying the log after it"
        );
    }
    if dedicated {
        applier.record_timer_changes();
    }
    applier
        .start(latest.as_ref().map(|(_, bytes)| bytes.as_slice()))
        .map_err(|e| StartError::Snapshot {
            dir: snapshot_dir.display().to_string(),
            message: e.to_string(),
        })?;
    let snapshots = SnapshotWriter::start(
        snapshot_dir,
        format!("raftline-node-{id}"),
        latest.as_ref().map_or(0, |(position, _)| *position),
    )
    .map_err(StartError::Thread)?;
    Ok((applier, snapshots))
}
