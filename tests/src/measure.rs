//! Measuring what a run did: means and percentiles of samples, and what `/proc` says about a process
//! (CPU time, resident set, bytes written). The simulation and every `kith-bench` scenario
//! report these figures, so each is computed here, once, one way.
//!
//! Linux only: where `/proc` is not readable the `self` figures are 0 and the per-process
//! samples are errors. Nothing here changes what it measures.

use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

/// `/proc` reports CPU times in USER_HZ, which is 100 on Linux.
const USER_HZ: f64 = 100.0;

/// The `p` percentile (0.0..=1.0) of `sorted` by the nearest-rank method: the smallest
/// sample with at least `p` of the samples at or below it (the default value when empty).
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The arithmetic mean of `v` (0 when empty).
pub fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU time, seconds (threads that exited included).
    pub cpu_s: f64,
    /// Resident set, bytes.
    pub rss: u64,
    /// Bytes passed to write-like system calls (sockets and files).
    pub wchar: u64,
}

/// A sample of process `pid`, from `/proc/<pid>/{stat,status,io}`.
pub fn proc_sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let cpu_s = stat_cpu_seconds(&stat)
        .with_context(|| format!("/proc/{pid}/stat has no utime and stime"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss =
        kib_field(&status, "VmRSS:").with_context(|| format!("no VmRSS for process {pid}"))? * 1024;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    let wchar = kib_field(&io, "wchar:").with_context(|| format!("no wchar for process {pid}"))?;
    Ok(ProcSample { cpu_s, rss, wchar })
}

/// A process's open sockets by kind, from its file descriptors and `/proc/net`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounts {
    /// TCP connections established (one per libp2p connection over TCP).
    pub tcp_established: usize,
    /// TCP sockets listening.
    pub tcp_listening: usize,
    /// TCP sockets in any other state (closing, connecting).
    pub tcp_other: usize,
    /// UDP sockets (QUIC endpoints, mDNS, DNS lookups).
    pub udp: usize,
}

/// Counts process `pid`'s sockets: the inodes behind `/proc/<pid>/fd`, looked up in the
/// network namespace's `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`. Sockets on local port `skip`
/// are left out (a node's REST API, whose clients are not peers).
pub fn socket_counts(pid: u32, skip: Option<u16>) -> Result<SocketCounts> {
    let mut inodes = std::collections::HashSet::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?;
    for fd in fds.flatten() {
        // A descriptor closed since the listing has no link any more: not a socket of ours.
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let mut counts = SocketCounts::default();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .with_context(|| format!("reading /proc/{pid}/net/{table}"))?;
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode.
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ours = f
                .get(9)
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i));
            // The local address is `hex ip:hex port`.
            let port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if !ours || (skip.is_some() && port == skip) {
                continue;
            }
            match (table.starts_with("tcp"), f.get(3).copied()) {
                (false, _) => counts.udp += 1,
                (true, Some("01")) => counts.tcp_established += 1,
                (true, Some("0A")) => counts.tcp_listening += 1,
                (true, _) => counts.tcp_other += 1,
            }
        }
    }
    Ok(counts)
}

/// A sample of this process.
pub fn self_sample() -> Result<ProcSample> {
    proc_sample(std::process::id())
}

/// A process's peak resident set so far (`VmHWM`), bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib =
        kib_field(&status, "VmHWM:").with_context(|| format!("no VmHWM for process {pid}"))?;
    Ok(kib * 1024)
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (0 where it is
/// not readable). Reads through a handle kept open, like [`rss_bytes`].
pub fn cpu_seconds() -> f64 {
    read_kept(&PROC_STAT, "/proc/self/stat")
        .and_then(|stat| stat_cpu_seconds(&stat))
        .unwrap_or(0.0)
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`, `VmHWM:`), in bytes
/// (0 where it is not readable).
pub fn rss_bytes(field: &str) -> u64 {
    read_kept(&PROC_STATUS, "/proc/self/status")
        .and_then(|s| kib_field(&s, field))
        .map_or(0, |kib| kib * 1024)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which is in parentheses and may hold spaces) start at
    // field 3 (state): utime and stime are 11 and 12 after the name.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

/// The number after `key` in a `key: value` file such as `/proc/<pid>/status` or `io`.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

static PROC_STAT: OnceLock<Mutex<std::fs::File>> = OnceLock::new();
static PROC_STATUS: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Reads a `/proc/self` file through a handle opened on first use and kept: a big mesh uses up
/// every file descriptor, and the figures must still be readable then.
fn read_kept(cell: &OnceLock<Mutex<std::fs::File>>, path: &str) -> Option<String> {
    use std::io::{Read, Seek};
    let file = match cell.get() {
        Some(f) => f,
        None => {
            let f = std::fs::File::open(path).ok()?;
            cell.get_or_init(|| Mutex::new(f))
        }
    };
    let mut f = file.lock().ok()?;
    f.rewind().ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), 5);
        assert_eq!(percentile(&v, 0.99), 10);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
        assert_eq!(percentile(&[1.5f64, 2.5], 0.5), 1.5);
    }

    #[test]
    fn stat_fields_after_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0";
        assert_eq!(stat_cpu_seconds(stat), Some(4.0));
        assert_eq!(kib_field("VmRSS:\t  1024 kB\n", "VmRSS:"), Some(1024));
    }

    #[test]
    fn sockets_are_counted_by_state() -> Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let n = socket_counts(std::process::id(), None)?;
        // Other tests of this process may hold sockets too: ours are counted at least.
        assert!(n.tcp_listening >= 1, "{n:?}");
        assert!(n.tcp_established >= 2, "{n:?}");
        assert!(n.udp >= 1, "{n:?}");
        drop((client, server, udp));
        Ok(())
    }
}
