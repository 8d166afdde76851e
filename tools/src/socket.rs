//! graspd's Unix sockets (the control socket and the ASA socket): bound
//! with their mode over a stale socket of a previous run, served by one
//! task, removed when their guard is dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// Binds `path` (replacing a stale socket there, refusing anything else),
/// with permissions `mode` (0600: graspd's user and root only), and runs
/// `each` for every connection until the returned guard is dropped.
/// `setting` names the configuration key, for the error.
pub fn serve_unix<F>(
    path: &Path,
    setting: &str,
    mode: u32,
    mut each: F,
) -> std::io::Result<SocketGuard>
where
    F: FnMut(UnixStream) + Send + 'static,
{
    if path.exists() {
        // A socket left by a previous run; anything else is refused.
        use std::os::unix::fs::FileTypeExt;
        if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; remove it or choose another {setting}",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => each(s),
                // EMFILE and friends: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(SocketGuard {
        path: path.to_path_buf(),
        task,
    })
}

/// Stops a socket's task and removes its file when dropped.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
