//! A node's configuration: a TOML file (`tools/dist/graspd.toml` is the
//! documented example) with command-line flags on top.
//!
//! [`NodeArgs`] are the flags `graspd` and every `grasp` command share;
//! [`NodeConfig::resolve`] merges them over the file and checks the result,
//! and [`NodeConfig::explain`] says what the node will do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use grasp_engine::transport::Security;

use crate::value::parse_value;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node.
    #[error("{path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (with line and column).
        why: String,
    },
    /// A setting has a value it cannot have.
    #[error("{setting}: {why}")]
    Invalid {
        /// Which setting (`security`, `tls.cert`, `serve[1].value`, ...).
        setting: String,
        /// Why, and what to do.
        why: String,
    },
}

fn invalid(setting: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        why: why.into(),
    }
}

/// Whether this build has the backend for `s`.
pub fn compiled(s: Security) -> bool {
    match s {
        Security::Quads => cfg!(feature = "quads"),
        Security::Tls => cfg!(feature = "tls"),
        _ => true,
    }
}

/// An error naming the cargo feature to enable when the backend for `s`
/// is not in this build. Every name parses whatever was compiled in.
pub fn check_compiled(s: Security) -> Result<(), ConfigError> {
    check_feature(s, compiled(s))
}

fn check_feature(s: Security, compiled: bool) -> Result<(), ConfigError> {
    if compiled {
        return Ok(());
    }
    Err(invalid(
        "security",
        format!(
            "this build has no {s} backend; rebuild with `cargo build -p grasp-tools --features {s}` (the default build has all three)"
        ),
    ))
}

/// Whether to relay between interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RelayChoice {
    /// When there is more than one interface (RFC 8990 §2.5.1.2).
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl FromStr for RelayChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RelayChoice::Auto),
            "always" | "true" => Ok(RelayChoice::Always),
            "never" | "false" => Ok(RelayChoice::Never),
            _ => Err(format!(
                "unknown relay mode {s:?}: choose auto, always or never"
            )),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" | "text" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}: choose plain or json")),
        }
    }
}

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    security: Option<String>,
    interfaces: Option<Vec<String>>,
    port: Option<u16>,
    listen_self: Option<bool>,
    dull: Option<bool>,
    relay: Option<String>,
    relay_only: Option<bool>,
    rescan_secs: Option<u64>,
    quads: QuadsFile,
    tls: TlsFile,
    log: LogFile,
    control: ControlFile,
    api: ApiFile,
    metrics: MetricsFile,
    serve: Vec<ServeFile>,
    asas: Vec<String>,
    asa_loop_count: Option<u8>,
    dull_objectives: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QuadsFile {
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    check_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogFile {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ControlFile {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsFile {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApiFile {
    socket: Option<PathBuf>,
    connections: Option<usize>,
    open: Option<bool>,
    allow: Vec<AllowFile>,
}

/// One `[[api.allow]]` rule, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AllowFile {
    user: Option<String>,
    group: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    asas: Vec<String>,
    own: Vec<String>,
    read: Vec<String>,
}

impl AllowFile {
    fn rule(self, i: usize) -> Result<crate::api::policy::Rule, ConfigError> {
        use crate::api::policy::{Names, Rule, Who};
        use nix::unistd::{Group, User};
        let setting = format!("api.allow[{i}]");
        let who = match (self.user, self.group, self.uid, self.gid) {
            (Some(name), None, None, None) => match User::from_name(&name) {
                Ok(Some(u)) => Who::User {
                    uid: u.uid.as_raw(),
                    name,
                },
                _ => return Err(invalid(setting, format!("no user {name:?} on this system"))),
            },
            (None, Some(name), None, None) => match Group::from_name(&name) {
                Ok(Some(g)) => Who::Group {
                    gid: g.gid.as_raw(),
                    name,
                },
                _ => {
                    return Err(invalid(
                        setting,
                        format!("no group {name:?} on this system"),
                    ))
                }
            },
            (None, None, Some(uid), None) => Who::User {
                uid,
                name: uid.to_string(),
            },
            (None, None, None, Some(gid)) => Who::Group {
                gid,
                name: gid.to_string(),
            },
            _ => {
                return Err(invalid(
                    setting,
                    "name exactly one of user, group, uid or gid",
                ))
            }
        };
        let names = |key: &str, v: Vec<String>| {
            Names::new(v).map_err(|why| invalid(format!("{setting}.{key}"), why))
        };
        Ok(Rule {
            who,
            asas: names("asas", self.asas)?,
            own: names("own", self.own)?,
            read: names("read", self.read)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    name: String,
    value: String,
    #[serde(default)]
    flood_every_secs: Option<u64>,
    #[serde(default)]
    loop_count: Option<u8>,
    #[serde(default)]
    ttl_ms: Option<u32>,
}

/// The example ASAs graspd can run (`asas = [...]`), with what they do.
pub const BUILTIN_ASAS: [(&str, &str); 3] = [
    (
        "briggs",
        "Briggs the banker: EX1 flooded, EX2 synchronized, EX3 loans negotiated",
    ),
    (
        "pfx-delegator",
        "RFC 8992 prefix delegation from fd00:5::/32, PrefixManager.Params flooded",
    ),
    (
        "brski-registrar",
        "RFC 8995 AN_join_registrar announced at this node's address, TCP 8443",
    ),
];

/// Flags every node program shares (`graspd` and each `grasp` command).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Configuration file (TOML); flags override it.
    #[arg(long, short = 'c', env = "GRASP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Security substrate: none, quads or tls.
    #[arg(long)]
    pub security: Option<String>,
    /// Interface to use (repeat for several; default: every interface that
    /// is up with an IPv6 link-local address, loopback excluded).
    #[arg(long = "interface", short = 'i')]
    pub interfaces: Vec<String>,
    /// TCP port for sessions, also the source port of multicasts (default
    /// 0: any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Receive this node's own multicasts, so several nodes on one host
    /// find each other (single-host labs).
    #[arg(long)]
    pub listen_self: bool,
    /// DULL mode (RFC 8990 §2.5.2): one link, loop count 1, no relaying;
    /// the only mode allowed without security.
    #[arg(long)]
    pub dull: bool,
    /// QUADS key file (from `quadsmaker new`, or graspy's quadsk.py for
    /// graspy's own QUADS).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// QUADS domain password instead of a key file (derives the key with
    /// argon2id, about 0.2 s).
    #[arg(long, env = "GRASP_QUADS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// QUADS domain name, with --password.
    #[arg(long, default_value = "grasp")]
    pub domain: String,
    /// TLS: this node's certificate chain (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// TLS: this node's private key (PEM, mode 0600).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// TLS: the domain's trust anchor(s) (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl NodeArgs {
    /// Whether any flag describes a node (a configuration file, a backend,
    /// interfaces, keys): then `grasp` runs that node rather than a
    /// graspd's found at the default socket.
    pub fn names_a_node(&self) -> bool {
        self.config.is_some()
            || self.security.is_some()
            || !self.interfaces.is_empty()
            || self.port.is_some()
            || self.listen_self
            || self.dull
            || self.key_file.is_some()
            || self.password.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.ca.is_some()
    }
}

/// A value a node serves, from `[[serve]]` in the file.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Objective name.
    pub name: String,
    /// Its value as written (diagnostic notation or JSON).
    pub value_text: String,
    /// The parsed value.
    pub value: grasp_engine::wire::Value,
    /// Also flood it this often.
    pub flood_every: Option<Duration>,
    /// Loop count of floods.
    pub loop_count: u8,
    /// Time to live of floods, ms.
    pub ttl_ms: u32,
}

/// Where the QUADS key comes from.
#[derive(Clone, Debug)]
pub enum QuadsKeySource {
    /// A key file.
    File(PathBuf),
    /// A password and domain (argon2id).
    Password {
        /// The password.
        password: zeroize::Zeroizing<String>,
        /// The domain.
        domain: String,
    },
}

/// TLS files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Trust anchors.
    pub ca: PathBuf,
    /// How often to look for renewed files.
    pub check_every: Duration,
}

/// A whole, checked node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Security substrate.
    pub security: Security,
    /// Interfaces by name; `None`: every usable one.
    pub interfaces: Option<Vec<String>>,
    /// TCP port (0: any).
    pub port: u16,
    /// Receive own multicasts.
    pub listen_self: bool,
    /// DULL mode.
    pub dull: bool,
    /// Relaying.
    pub relay: RelayChoice,
    /// No ASAs at all: relay and answer from the cache only.
    pub relay_only: bool,
    /// Interface rescan period.
    pub rescan: Duration,
    /// QUADS key, with `security = quads`.
    pub quads: Option<QuadsKeySource>,
    /// TLS files, with `security = tls`.
    pub tls: Option<TlsFiles>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` wins).
    pub log_level: String,
    /// Control socket for `grasp stats`.
    pub control: Option<PathBuf>,
    /// The ASA socket (`[api] socket`): ASAs in other processes use this
    /// node through it (`grasp_tools::api`).
    pub api_socket: Option<PathBuf>,
    /// Who may do what on it (`[api] open`, `[[api.allow]]`).
    pub api_policy: crate::api::policy::Policy,
    /// ASA clients connected at once, at most (`[api] connections`).
    pub api_connections: usize,
    /// Where `/metrics` (Prometheus) is served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Objectives served.
    pub serve: Vec<ServeConfig>,
    /// Built-in example ASAs to run (see [`BUILTIN_ASAS`]).
    pub asas: Vec<String>,
    /// Loop count of the built-in ASAs' objectives (how far their floods
    /// and discoveries travel); default 4, as graspy's examples.
    pub asa_loop_count: u8,
    /// In DULL mode, the objectives allowed (RFC 8990 §2.5.2): the file's
    /// `dull_objectives` plus every served objective.
    pub dull_objectives: Vec<String>,
    /// Where the file was, if any.
    pub file: Option<PathBuf>,
    /// Start without the interfaces and wait for them (graspd), rather than
    /// fail (the one-shot `grasp` commands).
    pub wait_for_interfaces: bool,
}

/// Overrides that only `graspd` has.
#[derive(Debug, Clone, Default)]
pub struct DaemonOverrides {
    /// `--relay-only`.
    pub relay_only: bool,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--control`.
    pub control: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads the file named in `args` (if any), applies the flags and
    /// checks the result (files exist, keys are private, values parse).
    pub fn resolve(args: &NodeArgs, daemon: &DaemonOverrides) -> Result<NodeConfig, ConfigError> {
        let mut file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let security: Security = match args.security.as_deref().or(file.security.as_deref()) {
            Some(s) => s.parse().map_err(|e| invalid("security", e))?,
            None => Security::Quads,
        };
        check_compiled(security)?;
        let interfaces = if !args.interfaces.is_empty() {
            Some(args.interfaces.clone())
        } else {
            file.interfaces.filter(|v| !v.is_empty())
        };
        let relay = match &file.relay {
            Some(r) => r.parse().map_err(|e| invalid("relay", e))?,
            None => RelayChoice::Auto,
        };
        let dull = args.dull || file.dull.unwrap_or(false);
        let relay_only = daemon.relay_only || file.relay_only.unwrap_or(false);
        if dull && relay_only {
            return Err(invalid(
                "relay_only",
                "a DULL instance never relays (RFC 8990 §2.5.2); choose one of dull and relay_only",
            ));
        }
        if dull && relay == RelayChoice::Always {
            return Err(invalid(
                "relay",
                "a DULL instance never relays; remove relay = \"always\"",
            ));
        }
        if dull && interfaces.as_ref().is_some_and(|i| i.len() > 1) {
            return Err(invalid(
                "interfaces",
                "a DULL instance runs on exactly one interface; run one graspd --dull per link",
            ));
        }
        let api_policy = crate::api::policy::Policy {
            open: file.api.open.unwrap_or(false),
            rules: std::mem::take(&mut file.api.allow)
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.rule(i))
                .collect::<Result<_, _>>()?,
        };
        let metrics_listen = match &file.metrics.listen {
            None => None,
            Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("{a:?} is not an address and port, e.g. \"[::1]:9464\""),
                )
            })?),
        };
        let api_connections = file
            .api
            .connections
            .unwrap_or(crate::api::Limits::default().connections);
        if api_connections == 0 {
            return Err(invalid("api.connections", "at least 1"));
        }
        if file.api.socket.is_none() && (api_policy.open || !api_policy.rules.is_empty()) {
            return Err(invalid(
                "api",
                "a policy without a socket: set [api] socket = \"/run/graspd/api.sock\"",
            ));
        }
        let quads = if security == Security::Quads {
            Some(quads_source(args, &file.quads)?)
        } else {
            None
        };
        let tls = if security == Security::Tls {
            Some(tls_files(args, &file.tls)?)
        } else {
            None
        };
        let log_format = match daemon.log_format.as_deref().or(file.log.format.as_deref()) {
            Some(f) => f.parse().map_err(|e| invalid("log.format", e))?,
            None => LogFormat::Plain,
        };
        let mut serve = Vec::new();
        for (i, s) in file.serve.into_iter().enumerate() {
            let value = parse_value(&s.value)
                .map_err(|e| invalid(format!("serve[{i}].value"), e.to_string()))?;
            if s.name.is_empty() {
                return Err(invalid(
                    format!("serve[{i}].name"),
                    "an objective needs a name",
                ));
            }
            if s.flood_every_secs == Some(0) {
                return Err(invalid(
                    format!("serve[{i}].flood_every_secs"),
                    "must be at least 1",
                ));
            }
            serve.push(ServeConfig {
                name: s.name,
                value_text: s.value,
                value,
                flood_every: s.flood_every_secs.map(Duration::from_secs),
                loop_count: s.loop_count.unwrap_or(if dull { 1 } else { 6 }),
                ttl_ms: s.ttl_ms.unwrap_or(60_000),
            });
        }
        for a in &file.asas {
            if !BUILTIN_ASAS.iter().any(|(n, _)| n == a) {
                return Err(invalid(
                    "asas",
                    format!(
                        "unknown ASA {a:?}; built in: {}",
                        BUILTIN_ASAS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if relay_only && !file.asas.is_empty() {
            return Err(invalid(
                "asas",
                "relay_only runs no ASAs; remove asas or relay_only",
            ));
        }
        if relay_only && !serve.is_empty() {
            return Err(invalid(
                "serve",
                "relay_only runs no ASAs; remove the [[serve]] entries or relay_only",
            ));
        }
        Ok(NodeConfig {
            security,
            interfaces,
            port: args.port.or(file.port).unwrap_or(0),
            listen_self: args.listen_self || file.listen_self.unwrap_or(false),
            dull,
            relay: if relay_only {
                RelayChoice::Always
            } else {
                relay
            },
            relay_only,
            rescan: Duration::from_secs(file.rescan_secs.unwrap_or(5).max(1)),
            quads,
            tls,
            log_format,
            log_level: file.log.level.unwrap_or_else(|| "info".into()),
            control: daemon.control.clone().or(file.control.socket),
            api_socket: file.api.socket,
            api_policy,
            api_connections,
            metrics_listen,
            dull_objectives: file
                .dull_objectives
                .iter()
                .cloned()
                .chain(serve.iter().map(|s| s.name.clone()))
                .collect(),
            serve,
            asas: file.asas,
            asa_loop_count: file.asa_loop_count.unwrap_or(4).max(1),
            file: args.config.clone(),
            wait_for_interfaces: false,
        })
    }

    /// What the node will do, setting by setting, for `--check-config`.
    pub fn explain(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "configuration {}",
            self.file
                .as_ref()
                .map_or("(no file: defaults and flags)".to_string(), |p| p
                    .display()
                    .to_string())
        );
        let sec = match self.security {
            Security::None => "none: plain UDP and TCP, no encryption or authentication (labs, or DULL only)".to_string(),
            Security::Quads => match &self.quads {
                Some(QuadsKeySource::File(p)) => format!("quads: AES-256-GCM with the domain key in {}", p.display()),
                Some(QuadsKeySource::Password { domain, .. }) => {
                    format!("quads: AES-256-GCM with a key derived from the password for domain {domain:?}")
                }
                None => "quads".into(),
            },
            Security::Tls => match &self.tls {
                Some(t) => format!(
                    "tls: mutual TLS 1.3 with {} (key {}), trusting {}; renewed files are picked up within {} s",
                    t.cert.display(),
                    t.key.display(),
                    t.ca.display(),
                    t.check_every.as_secs()
                ),
                None => "tls".into(),
            },
        };
        let _ = writeln!(o, "  security     {sec}");
        let _ = writeln!(
            o,
            "  interfaces   {}",
            match &self.interfaces {
                Some(v) => format!(
                    "{} (ones missing now are used when they appear)",
                    v.join(", ")
                ),
                None =>
                    "every interface that is up with an IPv6 link-local address, loopback excluded"
                        .into(),
            }
        );
        let _ = writeln!(
            o,
            "  rescan       interfaces and addresses followed as the kernel reports changes (every {} s where rtnetlink is unavailable)",
            self.rescan.as_secs()
        );
        let _ = writeln!(
            o,
            "  port         {}",
            if self.port == 0 {
                "any free TCP port (announced in discovery responses)".to_string()
            } else {
                format!("TCP {}", self.port)
            }
        );
        let _ = writeln!(
            o,
            "  listen_self  {}",
            if self.listen_self {
                "on: own multicasts are received (several nodes on one host)"
            } else {
                "off"
            }
        );
        let dull_mode = format!(
            "DULL: one link, loop count 1, no relaying (RFC 8990 §2.5.2); objectives allowed: {}",
            if self.dull_objectives.is_empty() {
                "none".to_string()
            } else {
                self.dull_objectives.join(", ")
            }
        );
        let mode = if self.dull {
            dull_mode.as_str()
        } else if self.relay_only {
            "relay only: no ASAs; relays discoveries and floods and answers from its cache"
        } else {
            match self.relay {
                RelayChoice::Auto => "relays when it has more than one interface",
                RelayChoice::Always => "always relays",
                RelayChoice::Never => "never relays",
            }
        };
        let _ = writeln!(o, "  mode         {mode}");
        for s in &self.serve {
            let _ = writeln!(
                o,
                "  serves       {} = {}{}",
                s.name,
                s.value,
                s.flood_every.map_or(String::new(), |f| format!(
                    ", flooded every {} s (loop count {}, ttl {} ms)",
                    f.as_secs(),
                    s.loop_count,
                    s.ttl_ms
                ))
            );
        }
        for a in &self.asas {
            let what = BUILTIN_ASAS
                .iter()
                .find(|(n, _)| n == a)
                .map_or("", |(_, w)| *w);
            let _ = writeln!(o, "  runs ASA     {a}: {what}");
        }
        let _ = writeln!(
            o,
            "  logs         {} at {:?} (RUST_LOG overrides)",
            match self.log_format {
                LogFormat::Plain => "plain text",
                LogFormat::Json => "JSON lines",
            },
            self.log_level
        );
        let _ = writeln!(
            o,
            "  control      {}",
            self.control.as_ref().map_or(
                "none (grasp stats cannot reach this node)".into(),
                |p| format!("{} (grasp stats --control {})", p.display(), p.display())
            )
        );
        let _ = writeln!(
            o,
            "  ASA socket   {}",
            self.api_socket
                .as_ref()
                .map_or("none (only built-in ASAs)".into(), |p| format!(
                    "{} (mode {:o}, {} clients at most): {}",
                    p.display(),
                    crate::api::socket_mode(&self.api_policy),
                    self.api_connections,
                    self.api_policy.explain()
                ))
        );
        let _ = writeln!(
            o,
            "  metrics      {}",
            self.metrics_listen.map_or("none".into(), |a| format!(
                "http://{a}/metrics (Prometheus text format){}",
                if a.ip().is_loopback() {
                    ""
                } else {
                    "; NOT loopback: anyone who reaches it reads the counters"
                }
            ))
        );
        o
    }
}

fn read_file(p: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: p.to_path_buf(),
        why: e.to_string(),
    })
}

fn must_exist(setting: &str, p: &Path) -> Result<(), ConfigError> {
    if p.exists() {
        Ok(())
    } else {
        Err(invalid(setting, format!("{} does not exist", p.display())))
    }
}

fn quads_source(args: &NodeArgs, f: &QuadsFile) -> Result<QuadsKeySource, ConfigError> {
    if let Some(p) = args.key_file.clone().or_else(|| {
        // A password on the command line wins over the file's key file.
        if args.password.is_some() {
            None
        } else {
            f.key_file.clone()
        }
    }) {
        must_exist("quads.key_file", &p)?;
        return Ok(QuadsKeySource::File(p));
    }
    match &args.password {
        Some(pw) if !pw.is_empty() => Ok(QuadsKeySource::Password {
            password: zeroize::Zeroizing::new(pw.clone()),
            domain: args.domain.clone(),
        }),
        _ => Err(invalid(
            "quads.key_file",
            "QUADS needs a key: give --key-file (make one with `quadsmaker new`), set quads.key_file in the file, or give --password / GRASP_QUADS_PASSWORD",
        )),
    }
}

fn tls_files(args: &NodeArgs, f: &TlsFile) -> Result<TlsFiles, ConfigError> {
    let pick = |a: &Option<PathBuf>, b: &Option<PathBuf>, setting: &str| {
        a.clone().or_else(|| b.clone()).ok_or_else(|| {
            invalid(
                setting,
                "TLS needs a certificate, its key and the domain CA: give --cert --key --ca or set tls.cert, tls.key, tls.ca (make them with `grasp-ca init` and `grasp-ca issue`)",
            )
        })
    };
    let t = TlsFiles {
        cert: pick(&args.cert, &f.cert, "tls.cert")?,
        key: pick(&args.key, &f.key, "tls.key")?,
        ca: pick(&args.ca, &f.ca, "tls.ca")?,
        check_every: Duration::from_secs(f.check_secs.unwrap_or(5).max(1)),
    };
    must_exist("tls.cert", &t.cert)?;
    must_exist("tls.key", &t.key)?;
    must_exist("tls.ca", &t.ca)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_text(text: &str, args: NodeArgs) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("graspd.toml");
        std::fs::write(&p, text).unwrap();
        NodeConfig::resolve(
            &NodeArgs {
                config: Some(p),
                ..args
            },
            &DaemonOverrides::default(),
        )
    }

    #[test]
    fn every_security_name_parses_and_a_missing_backend_names_its_feature() {
        for (s, want) in [
            ("none", Security::None),
            ("quads", Security::Quads),
            ("TLS", Security::Tls),
        ] {
            assert_eq!(s.parse::<Security>().unwrap(), want);
        }
        assert!("ipsec"
            .parse::<Security>()
            .unwrap_err()
            .contains("none, quads or tls"));
        let e = check_feature(Security::Tls, false).unwrap_err().to_string();
        assert!(e.contains("--features tls"), "{e}");
        assert!(check_feature(Security::Quads, true).is_ok());
    }

    #[test]
    fn flags_override_the_file() {
        let c = resolve_text(
            "security = \"none\"\ninterfaces = [\"eth0\"]\nport = 7100\n[[serve]]\nname = \"EX.a\"\nvalue = '[\"NZD\", 5]'\nflood_every_secs = 30\n",
            NodeArgs {
                interfaces: vec!["eth9".into()],
                port: Some(7200),
                ..NodeArgs::default()
            },
        )
        .unwrap();
        assert_eq!(c.security, Security::None);
        assert_eq!(c.interfaces, Some(vec!["eth9".to_string()]));
        assert_eq!(c.port, 7200);
        assert_eq!(c.serve[0].value.to_string(), "[\"NZD\", 5]");
        assert!(c.explain().contains("flooded every 30 s"));
    }

    #[test]
    fn mistakes_name_the_setting() {
        let cases = [
            ("security = \"ipsec\"", "security"),
            ("colour = 3", "unknown field"),
            ("security = \"quads\"", "quadsmaker new"),
            ("security = \"tls\"", "grasp-ca"),
            (
                "security = \"none\"\n[[serve]]\nname = \"X\"\nvalue = \"[1,\"",
                "serve[0].value",
            ),
            (
                "security = \"none\"\ndull = true\nrelay_only = true",
                "DULL",
            ),
            ("security = \"none\"\nrelay = \"sometimes\"", "relay"),
            (
                "security = \"quads\"\n[quads]\nkey_file = \"/nonexistent/k\"",
                "does not exist",
            ),
            (
                "security = \"none\"\n[log]\nformat = \"xml\"",
                "plain or json",
            ),
            ("port = \"x\"", "port"),
        ];
        for (text, want) in cases {
            let e = resolve_text(text, NodeArgs::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
