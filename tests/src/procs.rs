//! Child processes for scenarios that run the real binaries (`kith run`,
//! `kith-bootstrap run`): `kith-bench` and the fault campaign share this, so starting,
//! reading, killing and reaping a child is written once.
//!
//! A [`ChildProc`] is killed (SIGKILL) and reaped when dropped, so a failing scenario leaves
//! no process behind; its stdout is drained by a thread for the life of the process, so it
//! never blocks on a full pipe, and the lines are handed to [`ChildProc::line`].

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};

/// Longest wait for a child process to print what it must print at start.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed when dropped, whose stdout lines are read by a thread.
pub struct ChildProc {
    name: String,
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildProc {
    /// Starts `cmd` with stdin closed and stdout piped. `RUST_LOG` defaults to `warn` unless
    /// `cmd` sets it; stderr is whatever `cmd` says (inherited by default).
    pub fn spawn(name: &str, mut cmd: std::process::Command) -> Result<Self> {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let stdout = child
            .stdout
            .take()
            .with_context(|| format!("{name} has no stdout"))?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Read to the end even when nobody listens any more, so the child never blocks
            // on (or dies of) a full or closed pipe.
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Ok(ChildProc {
            name: name.to_string(),
            child,
            lines,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line satisfying `pred`, within [`CHILD_TIMEOUT`].
    pub async fn line(&mut self, pred: impl Fn(&str) -> bool) -> Result<String> {
        let name = self.name.clone();
        tokio::time::timeout(CHILD_TIMEOUT, async {
            loop {
                match self.lines.recv().await {
                    Some(l) if pred(&l) => return Ok(l),
                    Some(_) => {}
                    None => bail!("{name} exited (stdout closed) before printing what we wait for"),
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} printed nothing expected within {CHILD_TIMEOUT:?}",
                self.name
            )
        })?
    }

    /// `kill -9`, and wait until the process is gone (reaped).
    pub fn kill9(&mut self) -> Result<()> {
        // An already exited child makes `kill` fail; reaping it is what matters.
        let _ = self.child.kill();
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        Ok(())
    }

    /// Whether the process has exited on its own (its status then), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary `name` in `dir`, or in the directory of the running executable when `dir` is
/// `None` (a sibling: same target directory and profile). Errors say how to build it.
pub fn sibling_bin(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf(),
    };
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} not found: build it in the same profile (cargo build [--release] -p kith-node \
         -p kith-bootstrap) or pass --bin-dir",
        path.display()
    );
    Ok(path)
}

/// The directory `cargo test` puts the workspace's binaries in, seen from a test binary
/// (`target/<profile>/deps/<test>` → `target/<profile>`).
pub fn test_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("the test binary has no directory")?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().context("deps/ has no parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// A loopback address with a free port (free when asked; another process may take it).
pub fn free_loopback_addr() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The peer id at the end of a `/p2p/<id>` multiaddr.
pub fn peer_of(addr: &libp2p::Multiaddr) -> Result<libp2p::PeerId> {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .with_context(|| format!("{addr} has no /p2p/<peer id>"))
}
