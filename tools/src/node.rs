//! Starting a GRASP node from a [`NodeConfig`]: the chosen backend over the
//! plain ACP's sockets, the engine on top, and the node's counters as JSON.

use std::sync::Arc;

use grasp_engine::transport::{AcpTransport, InboundStream};
use grasp_engine::Config;
use grasp_engine::Grasp;
use serde_json::{json, Map, Value as Json};
use tracing::{info, warn};

use grasp_engine::transport::Security;

use crate::backend::{Bound, Control, Spec};
use crate::config::{NodeConfig, RelayChoice};

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The sockets, or the backend over them.
    #[error("cannot start the GRASP backend: {0}")]
    Bind(#[from] crate::backend::BindError),
    /// The backend is not compiled in.
    #[error("{0}")]
    Unavailable(String),
    /// The QUADS key.
    #[error("QUADS key: {0}")]
    Key(String),
    /// The TLS certificates.
    #[error("TLS identity: {0}")]
    Cert(String),
}

/// A running node.
pub struct Node {
    /// The engine's API.
    pub grasp: Grasp,
    /// The transport.
    pub transport: Arc<dyn AcpTransport>,
    /// The ASA socket's counters (when `api.socket` is set).
    pub api_stats: Arc<crate::api::Stats>,
    backend: Control,
    config: NodeConfig,
    started: std::time::Instant,
    /// Held while a reload runs: one at a time (a password-derived QUADS
    /// key costs argon2id's 64 MiB per derivation).
    reloading: std::sync::Mutex<()>,
    /// Key or certificate reloads (SIGHUP, `grasp reload`): done, failed.
    reloads: [std::sync::atomic::AtomicU64; 2],
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("security", &self.config.security)
            .finish_non_exhaustive()
    }
}

/// Raises the soft open-file limit to the hard one: a node holds one
/// descriptor per connection, and a soft limit of 1,024 (a common default)
/// would hit EMFILE below the connection cap. Warns when even the hard
/// limit leaves less than `needed` plus some room for listeners and
/// outgoing sessions.
pub fn raise_open_files(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        warn!(soft, hard, "could not raise the open-file limit");
    }
    let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if now < needed + 256 {
        warn!(
            limit = now,
            needed = needed + 256,
            "the open-file limit is below the connection cap: raise it (ulimit -n, or LimitNOFILE= in the service unit)"
        );
    }
}

/// The plain ACP's settings for `cfg`.
pub fn plain_config(cfg: &NodeConfig) -> grasp_acp::plain::Config {
    let mut p = grasp_acp::plain::Config::default()
        .port(cfg.port)
        .listen_self(cfg.listen_self)
        .rescan_interval(Some(cfg.rescan))
        .wait_for_interfaces(cfg.wait_for_interfaces);
    if let Some(i) = &cfg.interfaces {
        p = p.interfaces(i.iter().map(String::as_str));
    }
    p
}

/// The engine's settings for `cfg`.
pub fn engine_config(cfg: &NodeConfig) -> Config {
    let mut c = Config::default();
    c.dull = cfg.dull;
    c.dull_objectives = cfg.dull_objectives.clone();
    c.relay = match cfg.relay {
        RelayChoice::Auto => None,
        RelayChoice::Always => Some(true),
        RelayChoice::Never => Some(false),
    };
    // Chosen explicitly in the configuration: a lab.
    c.allow_insecure = cfg.security == Security::None;
    if cfg.api_socket.is_some() {
        // Room for the ASA socket's clients (a few ASAs and objectives
        // each; the socket bounds each connection, these bound them all).
        c.max_asas += 4 * cfg.api_connections;
        c.max_objectives += 8 * cfg.api_connections;
    }
    c
}

/// The backend `cfg` names, with its key or identity loaded.
fn spec(cfg: &NodeConfig) -> Result<Spec, NodeError> {
    match cfg.security {
        Security::None => {
            warn!("security none: GRASP runs without encryption or authentication (labs only)");
            Ok(Spec::None)
        }
        #[cfg(feature = "quads")]
        Security::Quads => {
            let src = cfg
                .quads
                .as_ref()
                .ok_or_else(|| NodeError::Key("no key configured".into()))?;
            Ok(match load_quads_key(src)? {
                QuadsKey::Graspy(key) => Spec::LegacyQuads(key),
                QuadsKey::Ours { key, .. } => {
                    info!(key_id = %key.id(), "QUADS key loaded");
                    Spec::Quads(Box::new(grasp_quads::KeyRing::new(*key)))
                }
            })
        }
        #[cfg(feature = "tls")]
        Security::Tls => {
            let f = cfg
                .tls
                .as_ref()
                .ok_or_else(|| NodeError::Cert("no TLS files configured".into()))?;
            let id = grasp_tls::NodeIdentity::load(&f.cert, &f.key, &f.ca)
                .map_err(|e| NodeError::Cert(e.to_string()))?;
            Ok(Spec::Tls(Box::new(id)))
        }
        #[allow(unreachable_patterns)]
        other => Err(NodeError::Unavailable(
            crate::config::check_compiled(other).err().map_or_else(
                || format!("backend {other} not available"),
                |e| e.to_string(),
            ),
        )),
    }
}

/// Binds the backend `cfg` names.
async fn bind(cfg: &NodeConfig) -> Result<Bound, NodeError> {
    let b = crate::backend::bind(plain_config(cfg), spec(cfg)?).await?;
    #[cfg(feature = "tls")]
    if let (Control::Tls(t), Some(f)) = (&b.control, &cfg.tls) {
        let _watch =
            t.protection()
                .watch_files(f.cert.clone(), f.key.clone(), f.ca.clone(), f.check_every);
    }
    Ok(b)
}

/// Binds the backend `cfg` names without an engine (for `grasp watch`).
pub async fn bind_transport(
    cfg: &NodeConfig,
) -> Result<(Arc<dyn AcpTransport>, InboundStream), NodeError> {
    let b = bind(cfg).await?;
    Ok((b.transport, b.inbound))
}

/// Whether a key file is graspy's `quadsk.py` (legacy QUADS) rather than
/// a quadsmaker TOML key file.
#[cfg(feature = "quads")]
pub fn is_graspy_key_file(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e == "py")
}

/// A QUADS key as configured: ours, or graspy's (legacy QUADS).
#[cfg(feature = "quads")]
pub enum QuadsKey {
    /// A quadsmaker key file or a password: our QUADS.
    Ours {
        /// The domain key (boxed: its cipher states are large).
        key: Box<grasp_quads::DomainKey>,
        /// The domain, when a key file names it.
        domain: Option<String>,
    },
    /// graspy's `quadsk.py`: legacy QUADS, for graspy interop only.
    Graspy(grasp_quads::legacy::LegacyKey),
}

#[cfg(feature = "quads")]
impl std::fmt::Debug for QuadsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identifiers only, never key material.
        match self {
            QuadsKey::Ours { key, domain } => write!(f, "QuadsKey::Ours({}, {domain:?})", key.id()),
            QuadsKey::Graspy(k) => write!(f, "QuadsKey::Graspy({})", k.fingerprint()),
        }
    }
}

/// Loads the QUADS key `src` names: a key file (quadsmaker's, or graspy's
/// `quadsk.py`), or a password and domain (argon2id).
#[cfg(feature = "quads")]
pub fn load_quads_key(src: &crate::config::QuadsKeySource) -> Result<QuadsKey, NodeError> {
    use crate::config::QuadsKeySource;
    let key_err = |e: grasp_quads::Error| NodeError::Key(e.to_string());
    match src {
        QuadsKeySource::File(p) if is_graspy_key_file(p) => Ok(QuadsKey::Graspy(
            grasp_quads::legacy::read_quadsk(p).map_err(key_err)?,
        )),
        QuadsKeySource::File(p) => {
            let f = grasp_quads::read_key_file(p).map_err(key_err)?;
            Ok(QuadsKey::Ours {
                key: Box::new(f.key()),
                domain: Some(f.domain),
            })
        }
        QuadsKeySource::Password { password, domain } => {
            let pw = grasp_quads::Password::new(password.as_str()).map_err(key_err)?;
            let key = grasp_quads::DomainKey::from_password(
                &pw,
                domain,
                grasp_quads::KdfParams::default(),
            )
            .map_err(key_err)?;
            Ok(QuadsKey::Ours {
                key: Box::new(key),
                domain: None,
            })
        }
    }
}

impl Node {
    /// Starts a node (inside a tokio runtime).
    pub async fn start(cfg: &NodeConfig) -> Result<Node, NodeError> {
        let api = if cfg.api_socket.is_some() {
            cfg.api_connections as u64
        } else {
            0
        };
        raise_open_files(grasp_acp::slots::Admission::default().max as u64 + api);
        let Bound {
            transport,
            inbound,
            control,
        } = bind(cfg).await?;
        let grasp = Grasp::start(transport.clone(), inbound, engine_config(cfg));
        Ok(Node {
            grasp,
            transport,
            api_stats: Arc::default(),
            backend: control,
            config: cfg.clone(),
            started: std::time::Instant::now(),
            reloading: std::sync::Mutex::new(()),
            reloads: Default::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Re-reads key or certificate files (SIGHUP): a renewed TLS identity,
    /// or a new QUADS key file (the old key is still accepted, so peers
    /// can be moved over one by one).
    pub fn reload(&self) -> Result<String, String> {
        let Ok(_one) = self.reloading.try_lock() else {
            return Err("a reload is already running; try again when it has finished".into());
        };
        let r = self.reload_now();
        let i = usize::from(r.is_err());
        self.reloads[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r
    }

    fn reload_now(&self) -> Result<String, String> {
        match &self.backend {
            #[cfg(feature = "tls")]
            Control::Tls(t) => {
                let f = self.config.tls.as_ref().ok_or("no TLS files")?;
                let id = grasp_tls::NodeIdentity::load(&f.cert, &f.key, &f.ca)
                    .map_err(|e| e.to_string())?;
                t.protection().reload(&id).map_err(|e| e.to_string())?;
                Ok(format!("TLS identity reloaded: {}", id.name))
            }
            #[cfg(feature = "quads")]
            Control::Quads(t) => {
                let src = self
                    .config
                    .quads
                    .as_ref()
                    .ok_or("no QUADS key configured")?;
                let QuadsKey::Ours { key, .. } = load_quads_key(src).map_err(|e| e.to_string())?
                else {
                    return Err(
                        "the key file is now graspy's: restart graspd to change QUADS flavour"
                            .into(),
                    );
                };
                let id = key.id();
                let ring = grasp_quads::KeyRing::new(*key);
                t.protection().set_keys(ring);
                Ok(format!("QUADS key reloaded: key id {id}"))
            }
            _ => Ok("nothing to reload for this backend".into()),
        }
    }

    /// Every counter of the node as JSON: engine (messages by type, drops,
    /// relays, rate limits), transport, and backend.
    pub async fn stats_json(&self) -> Json {
        let mut out = Map::new();
        out.insert("security".into(), json!(self.config.security.to_string()));
        out.insert("uptime_s".into(), json!(self.started.elapsed().as_secs()));
        let n = |i: usize| self.reloads[i].load(std::sync::atomic::Ordering::Relaxed);
        out.insert("key_reloads".into(), json!({"done": n(0), "failed": n(1)}));
        out.insert(
            "interfaces".into(),
            json!(self
                .transport
                .interfaces()
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()),
        );
        out.insert(
            "locator".into(),
            json!(self.transport.node_locator().to_string()),
        );
        if let Ok((s, open)) = self.grasp.stats().await {
            out.insert("engine".into(), engine_json(&s, open));
        }
        if self.config.api_socket.is_some() {
            out.insert("api".into(), self.api_stats.json());
        }
        let t = self.transport.stats();
        out.insert(
            "transport".into(),
            json!({
                "multicast_sent": t.multicast_sent,
                "multicast_received": t.multicast_received,
                "multicast_dropped_oversize": t.multicast_dropped_oversize,
                "multicast_dropped_queue_full": t.multicast_dropped_queue_full,
                "multicast_dropped_kernel": t.multicast_dropped_kernel,
                "multicast_dropped_other": t.multicast_dropped_other,
                "channels_opened": t.channels_opened,
                "channels_accepted": t.channels_accepted,
                "channels_refused": t.channels_refused,
                "channels_refused_source": t.channels_refused_source,
                "channels_evicted": t.channels_evicted,
                "channels_silent": t.channels_silent,
                "connect_failures": t.connect_failures,
                "malformed_streams": t.malformed_streams,
            }),
        );
        match &self.backend {
            #[cfg(feature = "quads")]
            Control::Quads(t) => {
                let q = t.protection().stats();
                let drops: Map<String, Json> = grasp_quads::DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str().to_string(), json!(q.dropped(*r))))
                    .collect();
                out.insert(
                    "quads".into(),
                    json!({"sealed": q.sealed, "opened": q.opened, "dropped": drops}),
                );
            }
            #[cfg(feature = "quads")]
            Control::Legacy(t) => {
                out.insert(
                    "quads_legacy".into(),
                    json!({"dropped": t.multicast_dropped()}),
                );
            }
            #[cfg(feature = "tls")]
            Control::Tls(t) => {
                let t = t.protection();
                let m = t.multicast_stats();
                let drops: Map<String, Json> = grasp_tls::multicast::DropReason::ALL
                    .iter()
                    .map(|r| (r.to_string(), json!(m.dropped(*r))))
                    .collect();
                let x = t.mux_stats();
                out.insert(
                    "tls".into(),
                    json!({
                        "identity": t.name(),
                        "multicast_signed": m.signed,
                        "multicast_verified": m.verified,
                        "multicast_dropped": drops,
                        "connections_dialled": x.connections_dialled,
                        "connections_accepted": x.connections_accepted,
                        "connections_idle_closed": x.connections_idle_closed,
                        "connections_malformed": x.connections_malformed,
                        "streams_opened": x.streams_opened,
                        "streams_accepted": x.streams_accepted,
                        "streams_refused": x.streams_refused,
                        "streams_reset": x.streams_reset,
                        "connections_stalled": x.connections_stalled,
                    }),
                );
            }
            _ => {}
        }
        Json::Object(out)
    }
}

/// The engine's counters as JSON.
pub fn engine_json(s: &grasp_engine::EngineStats, open_channels: usize) -> Json {
    let by_type = |c: &grasp_engine::proto::MessageCounts| -> Map<String, Json> {
        c.iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect()
    };
    json!({
        "open_channels": open_channels,
        "received": by_type(&s.received),
        "sent": by_type(&s.sent),
        "unsent": s.unsent,
        "malformed": s.malformed,
        "unknown_multicast": s.unknown_multicast,
        "dull_dropped": s.dull_dropped,
        "discoveries_relayed": s.discoveries_relayed,
        "floods_relayed": s.floods_relayed,
        "discoveries_repeated": s.discoveries_repeated,
        "discovery_answers_dropped": s.discovery_answers_dropped,
        "waits_capped": s.waits_capped,
        "asa_oversize": s.asa_oversize,
        "relay_rate_limited": s.relay_rate_limited,
        "relay_source_limited": s.relay_source_limited,
        "flood_relay_rate_limited": s.flood_relay_rate_limited,
        "flood_relay_source_limited": s.flood_relay_source_limited,
        "duplicates": s.duplicates,
        "responses_sent": s.responses_sent,
        "response_rate_limited": s.response_rate_limited,
        "response_source_limited": s.response_source_limited,
        "idle_channels_closed": s.idle_channels_closed,
        "bounded_refusals": s.bounded_refusals,
        "id_clashes": s.id_clashes,
        "interface_changes": s.interface_changes,
        "tables": {
            "asas": s.tables.asas,
            "objectives": s.tables.objectives,
            "discovery_cache": s.tables.discovery_cache,
            "flood_cache": s.tables.flood_cache,
            "discoveries": s.tables.discoveries,
        },
    })
}

/// Checks what `cfg` names beyond its syntax, for `--check-config`: the
/// interfaces exist and are usable now, the QUADS key or TLS identity
/// loads. Returns what was found, one line each.
pub fn check_deep(cfg: &NodeConfig) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    match cfg.security {
        #[cfg(feature = "quads")]
        Security::Quads => match cfg.quads.as_ref() {
            Some(src @ crate::config::QuadsKeySource::File(_)) => {
                match load_quads_key(src).map_err(|e| format!("quads.key_file: {e}"))? {
                    QuadsKey::Graspy(k) => found.push(format!(
                        "graspy legacy QUADS key (fingerprint {}): NO INTEGRITY PROTECTION, for graspy interop only",
                        k.fingerprint()
                    )),
                    QuadsKey::Ours { key, domain } => found.push(format!(
                        "QUADS key id {} for domain {:?}",
                        key.id(),
                        domain.unwrap_or_default()
                    )),
                }
            }
            _ => found.push("QUADS key from a password (derived at start)".into()),
        },
        #[cfg(feature = "tls")]
        Security::Tls => {
            let f = cfg.tls.as_ref().ok_or("no TLS files")?;
            let id = grasp_tls::NodeIdentity::load(&f.cert, &f.key, &f.ca)
                .map_err(|e| format!("tls: {e}"))?;
            found.push(format!(
                "TLS identity {} (certificate checked against the anchors)",
                id.name
            ));
        }
        _ => {}
    }
    // Interfaces last: keys and certificates are checked wherever this runs.
    let all = grasp_acp::interfaces::host_interfaces().map_err(|e| e.to_string())?;
    let present = grasp_acp::interfaces::select_present(&all, cfg.interfaces.as_deref());
    let missing: Vec<&String> = cfg
        .interfaces
        .iter()
        .flatten()
        .filter(|n| !present.iter().any(|p| &p.name == *n))
        .collect();
    if present.is_empty() && cfg.interfaces.is_none() {
        return Err(
            "interfaces: no usable interface now (up, multicast, not loopback, with an IPv6 link-local address); run `ip -6 addr` to see what this host has"
                .into(),
        );
    }
    found.push(format!(
        "interfaces now: {}",
        if present.is_empty() {
            "none".to_string()
        } else {
            present
                .iter()
                .map(|i| format!("{} ({})", i.name, i.link_local))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if !missing.is_empty() {
        found.push(format!(
            "not usable yet: {} (graspd starts anyway and uses them when they appear with a link-local address)",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(found)
}

/// Serves the configured objectives: each answers discovery and (unless
/// `dull`) synchronization requests, and those with `flood_every` are
/// flooded that often. Returns
/// the flooding tasks (abort them to stop).
pub async fn serve_objectives(
    grasp: &Grasp,
    serve: &[crate::config::ServeConfig],
    dull: bool,
) -> Result<Vec<tokio::task::JoinHandle<()>>, grasp_engine::ApiError> {
    use grasp_engine::wire::{Objective, ObjectiveFlags, TaggedObjective};
    use grasp_engine::RegisterOptions;
    let mut tasks = Vec::new();
    if serve.is_empty() {
        return Ok(tasks);
    }
    let asa = grasp.register_asa("graspd").await?;
    for s in serve {
        // Discoverable and synchronizable (F_DISC | F_SYNCH).
        let o = Objective::new(&s.name, ObjectiveFlags::from_bits(5))
            .with_value(s.value.clone())
            .with_loop_count(s.loop_count);
        // Discoverable in its own right: a DULL node answers discovery
        // without listening for synchronization.
        // `ttl_ms`: how long what this node tells others is valid, in its
        // floods and in its discovery responses alike.
        let opts = RegisterOptions {
            discoverable: true,
            ttl_ms: s.ttl_ms,
            ..RegisterOptions::default()
        };
        asa.register_objective(&o, opts).await?;
        // DULL answers discovery and floods, never synchronizes.
        if !dull {
            asa.listen_synchronize(&o).await?;
        }
        info!(objective = %s.name, flood_every = ?s.flood_every, "serving");
        if let Some(every) = s.flood_every {
            let (asa, o, ttl) = (asa.clone(), o.clone(), s.ttl_ms);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let t = vec![TaggedObjective {
                        objective: o.clone(),
                        locator: None,
                    }];
                    if let Err(e) = asa.flood(ttl, t).await {
                        warn!(objective = %o.name, error = %e, "flood failed");
                    }
                }
            }));
        }
    }
    Ok(tasks)
}

/// Starts the example ASAs `names` (see [`crate::config::BUILTIN_ASAS`])
/// on `grasp` (graspd's own engine, or a graspd's ASA socket for
/// `grasp-asa`), logging what they do; `addr` is the node's address (the
/// BRSKI registrar's). Returns their tasks.
pub async fn run_asas(
    grasp: &grasp_engine::Grasp,
    addr: std::net::Ipv6Addr,
    names: &[String],
    reach: u8,
) -> Result<Vec<tokio::task::JoinHandle<()>>, grasp_engine::ApiError> {
    use crate::asa::{briggs_gray, brski, prefix_manager, Transcript};
    let t = Arc::new(Transcript::logging());
    let mut tasks = Vec::new();
    for name in names {
        match name.as_str() {
            "briggs" => tasks.push(
                briggs_gray::briggs_with(
                    grasp,
                    rand::random(),
                    std::time::Duration::from_secs(2),
                    reach,
                    t.clone(),
                )
                .await?,
            ),
            "pfx-delegator" => {
                let (task, _) = prefix_manager::delegator(
                    grasp,
                    std::net::Ipv6Addr::new(0xfd00, 5, 0, 0, 0, 0, 0, 0),
                    32,
                    std::time::Duration::from_secs(60),
                    t.clone(),
                )
                .await?;
                tasks.push(task);
            }
            "brski-registrar" => {
                tasks.push(
                    brski::announce(
                        grasp,
                        brski::registrar_flood(addr, 8443),
                        std::time::Duration::from_secs(60),
                        t.clone(),
                    )
                    .await?,
                );
            }
            other => {
                return Err(grasp_engine::ApiError::new(
                    grasp_engine::ErrorCode::BadRequest,
                    format!("{other:?} is not an example ASA (see graspd --check-config)"),
                ))
            }
        }
        info!(asa = %name, "built-in ASA started");
    }
    Ok(tasks)
}
