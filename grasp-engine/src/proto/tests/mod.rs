//! The core alone, on virtual time: engines wired to each other by the
//! crate's harness ([`crate::testing`]), and a negotiation session alone.

use super::*;
use crate::testing::{ll, ula, Net};
use crate::transport::{Interface, Security};
use crate::wire::{Locator, MessageType, Objective, ObjectiveFlags, Value};

mod basics;
mod discovery;
mod dull;
mod flood;
mod relay;
mod session;

const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);

fn asa(net: &mut Net, e: usize, name: &str) -> AsaHandle {
    net.call(e, |eng, _| eng.register_asa(name.into()))
        .expect("a new ASA")
}

/// The event that ended call `id` on a bare engine, or `None` when the
/// engine has none queued (events of other calls are skipped).
fn ended(e: &mut Engine, id: CommandId) -> Option<Event> {
    while let Some(ev) = e.poll_event() {
        if ev.ended_call() == Some(id) {
            return Some(ev);
        }
    }
    None
}

/// A secured engine on two links (so a relay), with `config`.
fn two_link_engine(config: Config) -> Engine {
    Engine::new(
        config,
        TransportInfo {
            security: Security::Quads,
            interfaces: vec![
                Interface {
                    index: 1,
                    name: "a".into(),
                    link_local: ll(1),
                },
                Interface {
                    index: 2,
                    name: "b".into(),
                    link_local: ll(2),
                },
            ],
            node_locator: Locator::tcp6(ula(1), 7017),
            max_message_size: 2048,
        },
    )
}
