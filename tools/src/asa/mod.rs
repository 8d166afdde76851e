//! Example ASAs, written against the RFC 8991 API as any ASA would be:
//!
//! * [`briggs_gray`]: the negotiating pair from the graspy API document
//!   (Briggs the banker lends, Gray the borrower haggles), with the
//!   synchronization and flood objectives they also use;
//! * [`prefix_manager`]: prefix delegation in the spirit of RFC 8992
//!   (`PrefixManager` negotiation, `PrefixManager.Params` flood);
//! * [`brski`]: a BRSKI-style announcer (RFC 8995 `AN_join_registrar` and
//!   `AN_Proxy` floods with their locators).
//!
//! `tools/examples` runs each on a real node; `grasp-lab` runs Briggs and
//! Gray across a topology of nodes. Each reports what it does to a
//! [`Transcript`].

pub mod briggs_gray;
pub mod brski;
pub mod prefix_manager;

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a printing or quiet [`Transcript`] keeps for [`Transcript::lines`]
/// (a lab run or a test says a few hundred); later ones are counted, not
/// kept, so a long run cannot grow without bound.
pub const KEPT_LINES: usize = 4096;

/// A timed record of what the ASAs did: printed as it happens (or not) and
/// kept for the summary, or sent to the log.
///
/// Memory is bounded: a printing or quiet transcript keeps at most
/// [`KEPT_LINES`] lines (about 100 bytes each), a logging one keeps none,
/// since an ASA inside a daemon runs for months.
#[derive(Debug)]
pub struct Transcript {
    start: Instant,
    sink: Sink,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    lines: Vec<Line>,
    /// Lines said after [`KEPT_LINES`] were kept.
    dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Print,
    Quiet,
    Log,
}

/// One line of a [`Transcript`].
#[derive(Clone, Debug)]
pub struct Line {
    /// Since the start.
    pub at: Duration,
    /// Who (an ASA or node name).
    pub who: String,
    /// What happened.
    pub what: String,
}

impl Transcript {
    /// A transcript that prints (or not) and keeps its lines.
    pub fn new(quiet: bool) -> Self {
        Self::with_sink(if quiet { Sink::Quiet } else { Sink::Print })
    }

    /// A transcript that goes to the log, for ASAs inside graspd: each line
    /// at debug level (one per session step: an operator's info log shows
    /// the ASAs starting and failing, not every loan), values redacted.
    /// It keeps no lines.
    pub fn logging() -> Self {
        Self::with_sink(Sink::Log)
    }

    fn with_sink(sink: Sink) -> Self {
        Transcript {
            start: Instant::now(),
            sink,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// Records (and prints, or logs) one event.
    pub fn say(&self, who: &str, what: impl Into<String>) {
        let what = what.into();
        let at = self.start.elapsed();
        match self.sink {
            Sink::Log => {
                // Logs carry what the ASA did, never the values it exchanged.
                tracing::debug!(asa = %who, "{}", redact(&what));
                return;
            }
            Sink::Print => crate::outln!(
                "[{:>9.3} ms] {:<8} {}",
                at.as_secs_f64() * 1000.0,
                who,
                what
            ),
            Sink::Quiet => {}
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.lines.len() < KEPT_LINES {
            kept.lines.push(Line {
                at,
                who: who.to_string(),
                what,
            });
        } else {
            kept.dropped += 1;
        }
    }

    /// The lines kept so far (at most [`KEPT_LINES`]; none when logging).
    pub fn lines(&self) -> Vec<Line> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .clone()
    }

    /// Lines said but not kept (beyond [`KEPT_LINES`]).
    pub fn dropped(&self) -> u64 {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

/// `what` with the values taken out (numbers become `#`, quoted text and
/// structured values `…`), for logs: a daemon logs what its ASAs do, not
/// the payloads they exchange.
pub fn redact(what: &str) -> String {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    for tok in what.split(' ') {
        let opens = tok.chars().filter(|c| matches!(c, '[' | '{')).count() as i32;
        let closes = tok.chars().filter(|c| matches!(c, ']' | '}')).count() as i32;
        let quotes = tok.matches('"').count();
        let inside = depth > 0 || quoted || opens > 0 || quotes > 0;
        depth += opens - closes;
        if quotes % 2 == 1 {
            quoted = !quoted;
        }
        let bare = tok.trim_matches(|c: char| matches!(c, ',' | ';' | ')' | '(' | ':' | '.'));
        if inside {
            if out.last() != Some(&"…".to_string()) {
                out.push("…".to_string());
            }
        } else if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit() || c == '-') {
            out.push(tok.replace(bare, "#"));
        } else {
            out.push(tok.to_string());
        }
    }
    out.join(" ")
}

/// The time a step took, for people.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A line of `n` nodes on the in-memory fabric (1 ms links; the inner
/// nodes relay), each a running engine on a substrate that counts as
/// secured, so negotiation and synchronization run. For the examples and
/// their tests: no root, no network.
pub fn fabric_line(n: usize, seed: u64) -> Vec<grasp_engine::Grasp> {
    fabric_nodes(n, seed).into_iter().map(|(_, g)| g).collect()
}

/// [`fabric_line`] with each node's transport (what graspd's ASA socket
/// says of the node), for serving the nodes to ASAs in other processes.
pub fn fabric_nodes(
    n: usize,
    seed: u64,
) -> Vec<(
    std::sync::Arc<dyn grasp_engine::transport::AcpTransport>,
    grasp_engine::Grasp,
)> {
    use grasp_acp::fabric::{Fabric, LinkConfig};
    let f = Fabric::new(seed);
    let cfg = LinkConfig {
        loss: 0.0,
        delay: Duration::from_millis(1),
    };
    let links: Vec<_> = (0..n.saturating_sub(1))
        .map(|i| f.link(format!("l{i}"), cfg))
        .collect();
    (0..n)
        .map(|i| {
            let mut b = f.node(format!("N{}", i + 1));
            if i > 0 {
                b = b.attach(&links[i - 1]);
            }
            if i + 1 < n {
                b = b.attach(&links[i]);
            }
            let (t, inbound) = b.bind();
            // A test line: the fabric has no security, treat it as secured.
            let mut c = grasp_engine::Config::default();
            c.allow_insecure = true;
            let g = grasp_engine::Grasp::start(t.clone(), inbound, c);
            (
                t as std::sync::Arc<dyn grasp_engine::transport::AcpTransport>,
                g,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{redact, Transcript, KEPT_LINES};

    #[test]
    fn a_transcript_is_bounded() {
        let t = Transcript::new(true);
        for i in 0..KEPT_LINES + 10 {
            t.say("Briggs", format!("offers {i}"));
        }
        assert_eq!(t.lines().len(), KEPT_LINES);
        assert_eq!(t.dropped(), 10);
        // A daemon's transcript goes to the log and keeps nothing.
        let t = Transcript::logging();
        for _ in 0..100 {
            t.say("Briggs", "accepts 40 at once");
        }
        assert!(t.lines().is_empty());
        assert_eq!(t.dropped(), 0);
    }

    #[test]
    fn logs_keep_the_story_not_the_values() {
        assert_eq!(
            redact("asked for NZD 40; reserves 287"),
            "asked for NZD #; reserves #"
        );
        assert_eq!(redact("offers 112"), "offers #");
        assert_eq!(
            redact("has the EX1 flood = \"the time from Briggs\" from fd00::3 (loop count 3 on arrival)"),
            "has the EX1 flood = … from fd00::3 (loop count # on arrival)"
        );
        assert_eq!(
            redact("synchronized EX2 = [1, \"two\", 3] in 0.41 ms"),
            "synchronized EX2 = … in 0.41 ms"
        );
        assert_eq!(
            redact("declines: Insufficient funds"),
            "declines: Insufficient funds"
        );
    }
}
