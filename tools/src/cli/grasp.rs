//! `grasp`'s command line (its man page and completions are made from it).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

use crate::config::NodeArgs;

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Parser, Debug)]
#[command(
    name = "grasp",
    version,
    about = "GRASP from the command line: discover, synchronize, flood, negotiate, serve, watch, decode",
    after_help = "Exit status: 0 success, 1 failure, 2 bad arguments or configuration, 3 nothing found or no answer, 4 declined."
)]
pub struct Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    /// Print results as JSON (one object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for answers, ms.
    #[arg(long, global = true, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Use the running graspd behind this ASA socket instead of a node of
    /// our own.
    #[arg(
        long,
        global = true,
        env = "GRASP_API_SOCKET",
        conflicts_with = "no_api"
    )]
    pub api: Option<std::path::PathBuf>,
    /// Run a node of our own even when a graspd's ASA socket is at the
    /// default path.
    #[arg(long, global = true)]
    pub no_api: bool,
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub cmd: Cmd,
}

// Documented by its clap help text (a doc comment here would
// become the help's long description).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Find who offers an objective (M_DISCOVERY) and print their locators.
    Discover {
        /// Objective name.
        objective: String,
        /// Collect every answer until the timeout instead of the first.
        #[arg(long)]
        all: bool,
        /// Loop count of the discovery (how many relays it may cross + 1).
        #[arg(long, default_value_t = 6)]
        loop_count: u8,
    },
    /// Synchronize an objective (from a flood, a discovered peer, or --peer).
    Sync {
        /// Objective name.
        objective: String,
        /// Ask this peer directly, `[address]:port`.
        #[arg(long)]
        peer: Option<SocketAddr>,
    },
    /// Flood an objective's value to the domain (several objectives go in
    /// one M_FLOOD: `flood EX.a 1 EX.b '"two"'`).
    Flood {
        /// Objective name.
        objective: String,
        /// Its value.
        value: String,
        /// More objectives and values, in pairs, flooded in the same message.
        #[arg(value_name = "OBJECTIVE VALUE")]
        more: Vec<String>,
        /// Time to live of the flood, ms.
        #[arg(long, default_value_t = 60_000)]
        ttl: u32,
        /// Loop count (1: this link only).
        #[arg(long, default_value_t = 6)]
        loop_count: u8,
        /// Tag the flood with a TCP locator, `[address]:port`; `[::]:port`
        /// means "my link-local address on each link" (graspy's `::`).
        #[arg(long)]
        locator: Option<SocketAddr>,
    },
    /// Wait for a flood of an objective and print what arrived.
    GetFlood {
        /// Objective name.
        objective: String,
        /// How long to wait, seconds.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Negotiate: request an objective with a value; accept the peer's
    /// answer (or decline it with --decline).
    Negotiate {
        /// Objective name.
        objective: String,
        /// The value asked for.
        value: String,
        /// Decline the peer's counter-offer with this reason.
        #[arg(long)]
        decline: Option<String>,
        /// Ask this peer directly, `[address]:port`.
        #[arg(long)]
        peer: Option<SocketAddr>,
        /// A dry run (F_NEG_DRY): the peer answers as it would, and
        /// commits to nothing.
        #[arg(long)]
        dry_run: bool,
        #[allow(missing_docs)]
        #[command(flatten)]
        haggle: Haggle,
    },
    /// Answer negotiation requests for an objective until stopped: accept
    /// them, or decline, or counter-offer once (then accept what comes
    /// back); optionally ask for more time first (M_WAIT).
    ListenNegotiate {
        /// Objective name.
        objective: String,
        /// Counter-offer this value once.
        #[arg(long)]
        counter: Option<String>,
        /// Decline with this reason.
        #[arg(long, conflicts_with = "counter")]
        decline: Option<String>,
        /// Answer with M_INVALID (carrying this value, if given) instead:
        /// how a peer sees a request it could not parse.
        #[arg(long, conflicts_with_all = ["counter", "decline"], num_args = 0..=1, default_missing_value = "")]
        invalid: Option<String>,
        /// Send M_WAIT for this many ms first.
        #[arg(long)]
        wait_ms: Option<u64>,
        #[allow(missing_docs)]
        #[command(flatten)]
        haggle: Haggle,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Answer synchronization requests for an objective until stopped.
    ServeSync {
        /// Objective name.
        objective: String,
        /// Its value.
        value: String,
        /// Rapid mode, graspy's style: answer discoveries with the value
        /// inside the M_RESPONSE, so a requester needs no M_REQ_SYN.
        #[arg(long)]
        rapid: bool,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Print the floods and discoveries seen on the links, live.
    Watch {
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Pretty-print GRASP messages: hex of one message, or a pcap/pcapng
    /// capture (UDP 7017 and the TCP sessions), decrypting QUADS with
    /// --key-file.
    Decode {
        /// Hex of one message, or a capture file.
        input: String,
        /// Write the capture's messages to this pcap instead, QUADS
        /// decrypted and TLS multicasts unwrapped, for Wireshark's GRASP
        /// dissector (tools/wireshark/grasp.lua). Mode 0600.
        #[arg(long, value_name = "OUT")]
        write_pcap: Option<std::path::PathBuf>,
    },
    /// Print the registrations and caches of a running graspd (through its
    /// ASA socket: what this user may read), or of a node of our own after
    /// `--timeout-ms` of listening.
    Dump,
    /// Print a running graspd's counters (its control socket).
    Stats {
        /// graspd's control socket.
        #[arg(long, default_value = "/run/graspd/graspd.sock")]
        control: std::path::PathBuf,
    },
    /// Make a running graspd re-read its key or certificate files.
    Reload {
        /// graspd's control socket.
        #[arg(long, default_value = "/run/graspd/graspd.sock")]
        control: std::path::PathBuf,
    },
}

/// A scripted haggle, for `negotiate` (the requester, who asks for an
/// amount: a number, or an array ending in one, e.g. `["NZD", 150]`) and
/// `listen-negotiate` (the responder, who grants it, its first
/// counter-offer `--counter`). Given `--rounds`, each side goes on for up
/// to that many of its own offers instead of settling at the first answer.
// Documented by its clap help text.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Haggle {
    /// Haggle for up to this many offers of ours, then decline.
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Change our amount by this much at each offer after the first
    /// (negative to come down).
    #[arg(
        long,
        allow_hyphen_values = true,
        requires = "rounds",
        default_value_t = 0.0
    )]
    pub step: f64,
    /// Never offer past this amount (in the direction of --step): decline
    /// instead.
    #[arg(long, allow_hyphen_values = true, requires = "rounds")]
    pub floor: Option<f64>,
    /// Accept the peer's amount once it is this good: at least this for
    /// the requester, at most this for the responder.
    #[arg(long, allow_hyphen_values = true, requires = "rounds")]
    pub accept_at: Option<f64>,
}
