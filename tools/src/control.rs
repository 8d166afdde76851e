//! graspd's control socket: a Unix stream socket (mode 0600) where `grasp
//! stats` and `grasp reload` ask a running daemon for its counters or to
//! re-read its keys. One request line (`stats` or `reload`), one JSON reply
//! line. Clients are bounded (8 at once, 2 s each, 64-byte requests).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::socket::SocketGuard;
use tracing::{debug, warn};

use crate::node::Node;

const MAX_CLIENTS: usize = 8;
const CLIENT_TIME: Duration = Duration::from_secs(2);
const MAX_REQUEST: u64 = 64;

/// Listens on `path` (replacing a stale socket there) and answers until
/// the returned guard is dropped (which also removes the socket file).
pub fn serve(path: &Path, node: Arc<Node>) -> std::io::Result<SocketGuard> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    crate::socket::serve_unix(path, "control path", 0o600, move |s| {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("control client refused: too many at once");
            return;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if tokio::time::timeout(CLIENT_TIME, answer(s, &node))
                .await
                .is_err()
            {
                debug!("control client timed out");
            }
        });
    })
}

async fn answer(s: UnixStream, node: &Node) {
    let (r, mut w) = s.into_split();
    let mut line = String::new();
    if BufReader::new(r.take(MAX_REQUEST))
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let reply = match line.trim() {
        "stats" => node.stats_json().await,
        "reload" => match node.reload() {
            Ok(m) => json!({"ok": true, "message": m}),
            Err(e) => {
                warn!(error = %e, "reload asked over the control socket failed");
                json!({"ok": false, "error": e})
            }
        },
        other => {
            json!({"ok": false, "error": format!("unknown request {other:?}: use stats or reload")})
        }
    };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = w.write_all(text.as_bytes()).await;
}

/// Asks the daemon at `path` (`stats` or `reload`).
pub async fn request(path: &Path, what: &str) -> Result<Json, String> {
    let go = async {
        let mut s = UnixStream::connect(path).await.map_err(|e| {
            format!(
                "cannot reach graspd at {}: {e} (is it running with control = {0:?}?)",
                path.display()
            )
        })?;
        s.write_all(format!("{what}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<Json>(&line)
            .map_err(|e| format!("graspd sent something that is not JSON: {e}"))
    };
    tokio::time::timeout(CLIENT_TIME * 2, go)
        .await
        .map_err(|_| format!("graspd at {} did not answer in time", path.display()))?
}
