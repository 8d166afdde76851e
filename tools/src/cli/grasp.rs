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
    /// Flood an objective's value to the domain.
    Flood {
        /// Objective name.
        objective: String,
        /// Its value.
        value: String,
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
        /// Send M_WAIT for this many ms first.
        #[arg(long)]
        wait_ms: Option<u64>,
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
