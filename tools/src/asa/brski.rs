//! A BRSKI-style announcer (RFC 8995 §4.1.1 and §4.3): the GRASP floods
//! that tell pledges and proxies where to enrol.
//!
//! * `AN_join_registrar` (registrar, inside the ACP): flags 4 (synch only,
//!   not discoverable), loop count 255, value `"EST-TLS"`, locator
//!   `[O_IPv6_LOCATOR, registrar-address, IPPROTO_TCP, port]`, ttl
//!   180000 ms, sent at most once a minute.
//! * `AN_Proxy` (join proxy, on the pledge's link, DULL): flags 4, loop
//!   count 1 (link-local only), value `""`, locator
//!   `[O_IPv6_LOCATOR, proxy-link-local, IPPROTO_TCP, port]`, ttl 180000 ms.
//!
//! The spellings are RFC 8995's (graspy's examples write `AN_proxy`).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, TaggedObjective, Value};
use grasp_engine::RegisterOptions;
use grasp_engine::{ApiError, Grasp};

use super::Transcript;

/// The registrar announcement's name.
pub const REGISTRAR: &str = "AN_join_registrar";
/// The proxy announcement's name.
pub const PROXY: &str = "AN_Proxy";
/// Both announcements' lifetime, ms.
pub const TTL_MS: u32 = 180_000;

/// The registrar's announcement.
pub fn registrar_flood(addr: Ipv6Addr, port: u16) -> TaggedObjective {
    TaggedObjective {
        objective: Objective::new(REGISTRAR, ObjectiveFlags::SYNCH)
            .with_loop_count(255)
            .with_value(Value::from("EST-TLS")),
        locator: Some(Locator::tcp6(addr, port)),
    }
}

/// A join proxy's announcement.
pub fn proxy_flood(link_local: Ipv6Addr, port: u16) -> TaggedObjective {
    TaggedObjective {
        objective: Objective::new(PROXY, ObjectiveFlags::SYNCH)
            .with_loop_count(1)
            .with_value(Value::from("")),
        locator: Some(Locator::tcp6(link_local, port)),
    }
}

/// Announces `what` every `every` (RFC 8995: not more often than once a
/// minute in deployment) until the task is aborted.
pub async fn announce(
    grasp: &Grasp,
    what: TaggedObjective,
    every: Duration,
    t: Arc<Transcript>,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    let asa = grasp
        .register_asa(&format!("{}-announcer", what.objective.name))
        .await?;
    asa.register_objective(&what.objective, RegisterOptions::default())
        .await?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match asa.flood(TTL_MS, vec![what.clone()]).await {
                Ok(()) => t.say(
                    "brski",
                    format!(
                        "announced {} at {} (loop count {})",
                        what.objective.name,
                        what.locator
                            .as_ref()
                            .map(|l| l.to_string())
                            .unwrap_or_default(),
                        what.objective.loop_count
                    ),
                ),
                Err(e) => t.say("brski", format!("announcement failed: {e}")),
            }
        }
    }))
}

/// What a pledge or proxy learns: the announced locator and value of
/// `name`, from the flood cache, waiting up to `wait`.
pub async fn find(
    grasp: &Grasp,
    name: &str,
    wait: Duration,
) -> Result<Option<(Locator, String, u8)>, ApiError> {
    let asa = grasp.register_asa(&format!("{name}-finder")).await?;
    let t0 = std::time::Instant::now();
    let found = loop {
        if let Some(e) = asa.get_flood(name).await?.into_iter().next() {
            let v = e
                .objective
                .value
                .as_ref()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if let Some(l) = e.locator {
                break Some((l, v, e.objective.loop_count));
            }
        }
        if t0.elapsed() > wait {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    asa.deregister().await?;
    Ok(found)
}
