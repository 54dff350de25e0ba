//! `kith init`, `kith token`, `kith run` and `kith open`: the commands that work on the
//! node's own data directory rather than through its API. `kith run`'s [`Config`] is built
//! from its flags in one place, [`TryFrom<RunFlags>`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Args;
use kith_node::{client::ApiClient, config::Traversal, Config};
use libp2p::Multiaddr;

use super::out::{outln, sayln};

/// The flags of `kith run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A libp2p address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/0].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// A bootstrap peer, `/ip4/.../tcp/.../p2p/<id>` (repeatable, or comma-separated).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "KITH_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<Multiaddr>,

    /// How often to send presence heartbeats, e.g. `5s`, `1m` [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub heartbeat: Option<Duration>,

    /// Find peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,

    /// Allow `--api` on a non-loopback address (anyone who can reach it still needs the token).
    #[arg(long)]
    pub api_public: bool,

    /// Hide your last seen and online status (you then see no one else's either).
    #[arg(long)]
    pub hide_last_seen: bool,

    /// Largest file you may send, in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    pub max_media_mib: Option<u64>,
    /// Largest media from a contact fetched without asking [default: 100]; larger files wait
    /// for `POST /v1/media/{hash}/download` (media from non-contacts always waits).
    #[arg(long, value_name = "MIB")]
    pub auto_download_mib: Option<u64>,
    /// How long a download may go without any holder serving it before it fails [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub download_timeout: Option<std::time::Duration>,

    /// Close a connection with no open stream after this long [default: 30s]; links to
    /// contacts and store peers hold streams, so only connections nobody uses go.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,

    /// Relays to hold a slot on while not reachable from outside [default: 2]; 0 turns
    /// relaying off (then contacts behind NATs reach you only through store peers).
    #[arg(long, value_name = "N", env = "KITH_RELAYS")]
    pub relays: Option<usize>,
    /// Do not try to turn relayed connections into direct ones (hole punching).
    #[arg(long, env = "KITH_NO_HOLE_PUNCHING")]
    pub no_hole_punching: bool,
    /// Do not ask operators' peers whether your addresses are reachable (AutoNAT).
    #[arg(long, env = "KITH_NO_AUTONAT")]
    pub no_autonat: bool,
    /// Do not ask your router for a port mapping (UPnP).
    #[arg(long, env = "KITH_NO_UPNP")]
    pub no_upnp: bool,
    /// Answer DHT queries from the start, not only once reachable from outside.
    #[arg(long, env = "KITH_KAD_SERVER")]
    pub kad_server: bool,
}

/// `kith init`: creates the identity and API token once.
pub fn init(data_dir: &Path) -> Result<()> {
    let info = kith_node::run::init(data_dir)
        .with_context(|| format!("creating an identity in {}", data_dir.display()))?;
    outln!("kith: user {}", info.user_id)?;
    outln!("kith: data in {}", data_dir.display())?;
    outln!("kith: API token in {}", info.token_path.display())?;
    outln!("kith: start the node with `kith run`; `kith token` prints the token")
}

/// The API token of the node in `data_dir` (`kith token`, and every client command).
pub fn token(data_dir: &Path) -> Result<String> {
    kith_node::run::read_token(data_dir).with_context(|| {
        format!(
            "reading the API token in {} (run `kith init` first, or pass --data-dir)",
            data_dir.display()
        )
    })
}

/// What `kith run` is given: the global flags and its own.
pub struct RunFlags {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--api`, as typed.
    pub api: String,
    /// The flags of `kith run`.
    pub args: RunArgs,
}

/// Bytes in a mebibyte (`--max-media-mib`).
const BYTES_PER_MIB: u64 = 1024 * 1024;

impl TryFrom<RunFlags> for Config {
    type Error = anyhow::Error;

    /// The laptop defaults of [`Config::new`], with what the flags say instead.
    fn try_from(flags: RunFlags) -> Result<Self> {
        let RunFlags {
            data_dir,
            api,
            args,
        } = flags;
        let defaults = Config::new(data_dir);
        let api = api
            .parse::<SocketAddr>()
            .with_context(|| format!("--api `{api}` must be an ip:port such as 127.0.0.1:7878"))?;
        let heartbeat = match args.heartbeat {
            Some(h) if h.is_zero() => bail!("--heartbeat must be longer than zero"),
            Some(h) => h,
            None => defaults.heartbeat,
        };
        Ok(Config {
            api,
            listen: if args.listen.is_empty() {
                defaults.listen.clone()
            } else {
                args.listen
            },
            bootstrap: args.bootstrap,
            heartbeat,
            mdns: args.mdns,
            api_public: args.api_public,
            share_last_seen: !args.hide_last_seen,
            max_media_bytes: args.max_media_mib.map_or(defaults.max_media_bytes, |mib| {
                mib.saturating_mul(BYTES_PER_MIB)
            }),
            auto_download_bytes: args
                .auto_download_mib
                .map_or(defaults.auto_download_bytes, |mib| {
                    mib.saturating_mul(BYTES_PER_MIB)
                }),
            download_timeout: args.download_timeout.unwrap_or(defaults.download_timeout),
            idle_timeout: args.idle_timeout.unwrap_or(defaults.idle_timeout),
            traversal: Traversal {
                relays: args.relays.unwrap_or(defaults.traversal.relays),
                hole_punching: defaults.traversal.hole_punching && !args.no_hole_punching,
                autonat: defaults.traversal.autonat && !args.no_autonat,
                upnp: defaults.traversal.upnp && !args.no_upnp,
                kad_server: defaults.traversal.kad_server || args.kad_server,
            },
            ..defaults
        })
    }
}

/// `kith run`: runs the node in the foreground until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    let running = kith_node::run::start(config)
        .await
        .context("starting the node")?;
    sayln!("kith: user {}", running.node.user_id());
    sayln!("kith: api http://{}", running.api_addr);
    sayln!(
        "kith: web {}",
        kith_node::web::url(running.api_addr, &running.token, None)
    );
    // `start` returns once every listener is bound, so the addresses are known.
    for addr in running.node.listen_addrs() {
        sayln!("kith: listening on {addr}");
    }

    shutdown_signal().await?;
    eprintln!("kith: shutting down (press Ctrl-C again to exit at once)");
    tokio::select! {
        result = running.shutdown() => result.context("shutting down the node")?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted again; exited without a clean shutdown"),
    }
    Ok(())
}

/// `kith open`: prints the web app's address with the token and tries to start a browser on
/// it. Never fails for want of a browser: the printed address is enough.
pub async fn open(data_dir: &Path, api: &str, print_only: bool) -> Result<()> {
    let addr = api
        .parse::<SocketAddr>()
        .with_context(|| format!("--api `{api}` must be an ip:port such as 127.0.0.1:7878"))?;
    let token = token(data_dir)?;
    let url = kith_node::web::url(addr, &token, None);
    let running = match ApiClient::new(api, token.clone()) {
        Ok(client) => client.me().await.is_ok(),
        Err(_) => false,
    };
    if !running {
        eprintln!("kith: no node answers at {api} yet; start it with `kith run` (the page waits)");
    }
    outln!("{url}")?;
    if !print_only && !start_browser(&url) {
        eprintln!("kith: no xdg-open or open found; open the address above in your browser");
    }
    Ok(())
}

/// Starts the desktop's URL opener on `url` without waiting for it; false if there is none.
fn start_browser(url: &str) -> bool {
    use std::process::{Command, Stdio};
    ["xdg-open", "open"].iter().any(|opener| {
        Command::new(opener)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .is_ok()
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}
