//! Link and address changes as the kernel reports them (rtnetlink's link
//! and address groups), so the plain ACP follows interfaces when they
//! change instead of polling: a new link is used, a deleted one dropped
//! and an address that finished duplicate address detection taken within
//! milliseconds. What changed is not parsed here: a change is the signal to
//! read the interfaces again (`host_interfaces`), the one way they are read.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

/// rtnetlink's multicast groups (linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// A change comes as several messages (a link, its state, its addresses):
/// they are taken together once this long passes without another.
const QUIET: Duration = Duration::from_millis(10);
/// However busy the kernel is, a change is reported after this long.
const AT_MOST: Duration = Duration::from_millis(100);

/// Subscription to the kernel's link and address changes.
pub(crate) struct Changes {
    sock: TokioSocket,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Changes")
    }
}

impl Changes {
    /// Subscribes (inside a tokio runtime); fails where netlink is not
    /// available (then interfaces are rescanned on a timer).
    pub(crate) fn open() -> io::Result<Changes> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        sock.socket_mut().bind(&SocketAddr::new(0, groups))?;
        Ok(Changes { sock })
    }

    /// Waits for a change, and for the messages that come with it.
    pub(crate) async fn next(&mut self) -> io::Result<()> {
        match self.sock.recv_from_full().await {
            Ok(_) => {}
            // The kernel dropped messages for us (ENOBUFS): something
            // changed, and what is read next is fresh.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
        let until = tokio::time::Instant::now() + AT_MOST;
        loop {
            let quiet = (tokio::time::Instant::now() + QUIET).min(until);
            match tokio::time::timeout_at(quiet, self.sock.recv_from_full()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
            if tokio::time::Instant::now() >= until {
                return Ok(());
            }
        }
    }
}
