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

/// A timed record of what the ASAs did, printed as it happens (unless
/// quiet) and kept for the summary.
#[derive(Debug)]
pub struct Transcript {
    start: Instant,
    sink: Sink,
    lines: Mutex<Vec<Line>>,
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
    /// A transcript that prints (or not).
    pub fn new(quiet: bool) -> Self {
        Transcript {
            start: Instant::now(),
            sink: if quiet { Sink::Quiet } else { Sink::Print },
            lines: Mutex::new(Vec::new()),
        }
    }

    /// A transcript that goes to the log (`tracing`, level info), for ASAs
    /// inside graspd.
    pub fn logging() -> Self {
        Transcript {
            start: Instant::now(),
            sink: Sink::Log,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Records (and prints) one event.
    pub fn say(&self, who: &str, what: impl Into<String>) {
        let line = Line {
            at: self.start.elapsed(),
            who: who.to_string(),
            what: what.into(),
        };
        if self.sink == Sink::Log {
            // Logs carry what the ASA did, never the values it exchanged.
            tracing::info!(asa = %line.who, "{}", redact(&line.what));
        }
        if self.sink == Sink::Print {
            crate::outln!(
                "[{:>9.3} ms] {:<8} {}",
                line.at.as_secs_f64() * 1000.0,
                line.who,
                line.what
            );
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Everything recorded so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
            let mut b = f
                .node(format!("N{}", i + 1))
                .simulated_security(grasp_engine::transport::Security::Quads);
            if i > 0 {
                b = b.attach(&links[i - 1]);
            }
            if i + 1 < n {
                b = b.attach(&links[i]);
            }
            let (t, inbound) = b.bind();
            grasp_engine::Grasp::start(t, inbound, grasp_engine::proto::Config::default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::redact;

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
