//! The `kith` binary: parses the command line and either runs a node (`kith run`) or talks to
//! a running one through its REST API. Everything else lives in the `kith_node` library so
//! tests can start nodes in-process.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use kith_node::{client::ApiClient, handle::MessageView, Config};
use kith_protocol::DeliveryStatus;
use libp2p::Multiaddr;

/// Kith: a peer-to-peer messenger. Your node delivers messages straight to your contacts'
/// nodes; there is no server.
#[derive(Parser, Debug)]
#[command(name = "kith", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Where this node keeps its identity, API token and messages.
    #[arg(long, env = "KITH_DATA_DIR", global = true, default_value_os_t = Config::default_data_dir())]
    data_dir: PathBuf,

    /// The node's REST API: the address `kith run` serves on and other commands talk to.
    #[arg(long, env = "KITH_API", global = true, default_value = kith_node::config::DEFAULT_API)]
    api: String,

    #[command(subcommand)]
    command: Command,
}

/// `kith media ...`.
#[derive(Debug, Subcommand)]
enum MediaCommand {
    /// Save a received (or sent) file, decrypted, to a path; shows progress.
    Get {
        /// The media hash (from `kith history` or `kith send --file`).
        hash: String,
        /// Where to write it.
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
    },
}

/// The MIME type of a file by its extension (the node carries anything else as
/// `application/octet-stream`).
fn mime_of(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// `kith send <user> --file <path>`: streams the file to the API with a progress bar.
async fn send_file(
    client: &ApiClient,
    user: &str,
    path: &Path,
    caption: Option<&str>,
) -> Result<kith_node::client::MediaSent> {
    use futures::StreamExt;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_string();
    let bar = progress_bar(len, &format!("sending {name}"));
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
        if let Ok(c) = chunk {
            counted.inc(c.len() as u64);
        }
    });
    let sent = client
        .send_media(
            user,
            &name,
            mime_of(path),
            caption,
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    bar.finish_and_clear();
    Ok(sent?)
}

/// `kith media get <hash> -o <path>`: streams the decrypted file to `output` (through a
/// temporary name, so a cut download never looks complete).
async fn get_media(client: &ApiClient, hash: &str, output: &Path) -> Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let res = client.media(hash).await?;
    let len = res.content_length().unwrap_or(0);
    let bar = progress_bar(len, "receiving");
    let tmp = output.with_extension("kith-part");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut")?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await?;
    tokio::fs::rename(&tmp, output)
        .await
        .with_context(|| format!("renaming to {}", output.display()))?;
    bar.finish_and_clear();
    println!("{}", output.display());
    Ok(())
}

const EXAMPLES: &str = "\
Examples:
  kith init                          create an identity in the data directory
  kith run --mdns                    run the node (keep it running in its own terminal)
  kith open                          open the chat in your browser
  kith invite                        print your invite; give it to a friend
  kith contacts add <invite> --name Ana
  kith send <user> 'hello'           send a message
  kith send <user> --file clip.mp4   send an image or video (with a progress bar)
  kith media get <hash> -o clip.mp4  save a received file
  kith history <user>                show the conversation with ticks
  kith presence <user>               online, or when last seen

Two nodes on one machine:
  kith --data-dir /tmp/a init && kith --data-dir /tmp/a --api 127.0.0.1:7001 run
  kith --data-dir /tmp/b init && kith --data-dir /tmp/b --api 127.0.0.1:7002 run";

#[derive(Subcommand, Debug)]
enum Command {
    /// Create this node's identity and API token in the data directory (once).
    Init,
    /// Run the node in the foreground until Ctrl-C or SIGTERM.
    #[command(after_help = "\
Examples:
  kith run
  kith run --listen /ip4/0.0.0.0/tcp/4001 --bootstrap /ip4/203.0.113.5/tcp/4001/p2p/12D3KooW...
  KITH_BOOTSTRAP=/ip4/203.0.113.5/tcp/4001/p2p/12D3KooW...,/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW... kith run
  RUST_LOG=kith_node=debug kith run")]
    Run(RunArgs),
    /// Print the API token (send it as `Authorization: Bearer <token>`).
    Token,
    /// Open the web app of the running node in a browser: prints its address, which hands the
    /// API token to the page once, and starts `xdg-open` (or `open`) on it if there is one.
    #[command(after_help = "\
Examples:
  kith open
  kith open --print              # only print the address
  kith --api 127.0.0.1:7802 --data-dir /tmp/bob open")]
    Open {
        /// Only print the address; do not start a browser.
        #[arg(long)]
        print: bool,
    },
    /// Run a local demo mesh in this one process: three store peers and two users, alice and
    /// bob, on 127.0.0.1, introduced to each other, with a first message sent. Prints each
    /// user's API address and token; Ctrl-C stops everything.
    #[command(after_help = "\
Examples:
  kith demo
  kith demo --port 0            # any free API ports
  kith demo --dir /tmp/kith-demo  # keep the demo's data after it stops")]
    Demo {
        /// Keep the demo's data in this directory (default: a temporary one, removed at exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// API port of alice; bob gets the next one. 0 picks free ports.
        #[arg(long, default_value_t = 7878)]
        port: u16,
    },
    /// Print your invite: one string a contact adds with `kith contacts add`.
    Invite,
    /// Add or list contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Send a text message to a contact.
    #[command(after_help = "\
Examples:
  kith send 12D3KooW... 'see you at 8'
  kith send 12D3KooW... 'draft' --meta '{\"client\":\"cli\"}'")]
    Send {
        /// The contact's user id.
        user: String,
        /// The message text (not with --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Client metadata stored with the message: a JSON object.
        #[arg(long, value_name = "JSON")]
        meta: Option<String>,
        /// Send this file (image, video, anything) instead of a text; shows progress.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// A caption for the file.
        #[arg(long, requires = "file")]
        caption: Option<String>,
    },
    /// Media files received or sent.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Show a page of the conversation with a contact, oldest first.
    ///
    /// Outgoing messages show their ticks: `…` pending, `✓` sent, `✓✓` delivered,
    /// `✓✓ read` read.
    History {
        /// The contact's user id.
        user: String,
        /// Skip this many newest messages (the previous page prints the next value).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// How many messages to show, 1 to 200 [default: 50].
        #[arg(long)]
        count: Option<usize>,
    },
    /// Mark the conversation with a contact read (sends a read receipt).
    Read {
        /// The contact's user id.
        user: String,
    },
    /// Show whether a contact is online, or when they were last seen.
    Presence {
        /// The contact's user id.
        user: String,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A libp2p address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/0].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,

    /// A bootstrap peer, `/ip4/.../tcp/.../p2p/<id>` (repeatable, or comma-separated).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "KITH_BOOTSTRAP",
        value_delimiter = ','
    )]
    bootstrap: Vec<Multiaddr>,

    /// How often to send presence heartbeats, e.g. `5s`, `1m` [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,

    /// Find peers on the local network with mDNS.
    #[arg(long)]
    mdns: bool,

    /// Allow `--api` on a non-loopback address (anyone who can reach it still needs the token).
    #[arg(long)]
    api_public: bool,

    /// Hide your last seen and online status (you then see no one else's either).
    #[arg(long)]
    hide_last_seen: bool,

    /// Largest file you may send, in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    max_media_mib: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum ContactsCommand {
    /// Add a contact from their invite (`kith invite` on their machine prints it).
    Add {
        /// The invite string.
        invite: String,
        /// A name to show for them.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your contacts.
    List,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kith: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Init => init(&data_dir),
        Command::Run(args) => run(data_dir, &cli.api, args).await,
        Command::Token => {
            println!("{}", token(&data_dir)?);
            Ok(())
        }
        Command::Demo { dir, port } => demo(dir, port).await,
        Command::Open { print } => open(&data_dir, &cli.api, print).await,
        command => {
            init_tracing("warn");
            let client = ApiClient::new(&cli.api, token(&data_dir)?)?;
            client_command(&client, command).await
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn init(data_dir: &Path) -> Result<()> {
    let info = kith_node::run::init(data_dir)
        .with_context(|| format!("creating an identity in {}", data_dir.display()))?;
    println!("kith: user {}", info.user_id);
    println!("kith: data in {}", data_dir.display());
    println!("kith: API token in {}", info.token_path.display());
    println!("kith: start the node with `kith run`; `kith token` prints the token");
    Ok(())
}

fn token(data_dir: &Path) -> Result<String> {
    kith_node::run::read_token(data_dir).with_context(|| {
        format!(
            "reading the API token in {} (run `kith init` first, or pass --data-dir)",
            data_dir.display()
        )
    })
}

async fn run(data_dir: PathBuf, api: &str, args: RunArgs) -> Result<()> {
    init_tracing("info");
    let mut config = Config::new(data_dir);
    config.api = api
        .parse::<SocketAddr>()
        .with_context(|| format!("--api `{api}` must be an ip:port such as 127.0.0.1:7878"))?;
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.bootstrap = args.bootstrap;
    if let Some(heartbeat) = args.heartbeat {
        if heartbeat.is_zero() {
            bail!("--heartbeat must be longer than zero");
        }
        config.heartbeat = heartbeat;
    }
    config.mdns = args.mdns;
    config.api_public = args.api_public;
    config.share_last_seen = !args.hide_last_seen;
    if let Some(mib) = args.max_media_mib {
        config.max_media_bytes = mib.saturating_mul(1024 * 1024);
    }

    let running = kith_node::run::start(config)
        .await
        .context("starting the node")?;
    println!("kith: user {}", running.node.user_id());
    println!("kith: api http://{}", running.api_addr);
    println!(
        "kith: web {}",
        kith_node::web::url(running.api_addr, &running.token, None)
    );
    // `start` returns once every listener is bound, so the addresses are known.
    for addr in running.node.listen_addrs() {
        println!("kith: listening on {addr}");
    }

    shutdown_signal().await?;
    eprintln!("kith: shutting down (press Ctrl-C again to exit at once)");
    tokio::select! {
        result = running.shutdown() => result.context("shutting down the node")?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted again; exited without a clean shutdown"),
    }
    Ok(())
}

async fn demo(dir: Option<PathBuf>, port: u16) -> Result<()> {
    init_tracing("warn");
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("kith-demo-{}", std::process::id())),
            true,
        ),
    };
    let ports = if port == 0 {
        vec![0, 0]
    } else {
        vec![port, port.saturating_add(1)]
    };
    println!("kith demo: starting 3 store peers and 2 users (alice, bob) on 127.0.0.1 ...");
    let mesh = kith_node::mesh::Mesh::start(kith_node::mesh::MeshConfig {
        dir: dir.clone(),
        stores: 3,
        users: vec!["alice".into(), "bob".into()],
        api_ports: ports,
        heartbeat: Duration::from_secs(5),
    })
    .await
    .context("starting the demo mesh")?;
    let (Some(alice), Some(bob)) = (mesh.user("alice"), mesh.user("bob")) else {
        bail!("demo mesh lacks alice or bob");
    };
    alice
        .node
        .send_text(
            bob.user_id(),
            "Hi Bob! This is Kith: end to end encrypted, no server in between.".into(),
            serde_json::json!({"client": "kith demo"}),
        )
        .await
        .context("sending the first message")?;
    for s in &mesh.stores {
        if let Some(addr) = s.listen_addrs.first() {
            println!("store peer   {addr}");
        }
    }
    for (name, n) in &mesh.users {
        println!();
        println!("{name:<6} user  {}", n.user_id());
        println!("       api   http://{}", n.api_addr);
        println!("       token {}", n.token);
        println!(
            "       web   {}",
            kith_node::web::url(n.api_addr, &n.token, Some(name))
        );
    }
    println!();
    println!("Open alice's and bob's web addresses in two browser windows side by side and chat.");
    let (a, b) = (alice.api_addr, bob.user_id());
    println!();
    println!("Try, in another terminal:");
    println!(
        "  curl -s -H 'Authorization: Bearer {}' 'http://{a}/v1/conversations/{b}?count=10'",
        alice.token
    );
    println!(
        "  kith --api {a} --data-dir {} history {b}",
        dir.join("alice").display()
    );
    println!("Ctrl-C stops the demo.");
    shutdown_signal().await?;
    eprintln!("kith demo: stopping");
    mesh.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// `kith open`: prints the web app's address with the token and tries to start a browser on
/// it. Never fails for want of a browser: the printed address is enough.
async fn open(data_dir: &Path, api: &str, print_only: bool) -> Result<()> {
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
    println!("{url}");
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
async fn shutdown_signal() -> Result<()> {
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

async fn client_command(client: &ApiClient, command: Command) -> Result<()> {
    match command {
        Command::Invite => {
            let me = client.me().await?;
            println!("{}", me.invite);
        }
        Command::Contacts(ContactsCommand::Add { invite, name }) => {
            let contact = client.add_contact(&invite, name.as_deref()).await?;
            println!("added {}", contact_line(&contact.user_id, &contact.name));
        }
        Command::Contacts(ContactsCommand::List) => {
            let contacts = client.contacts().await?;
            if contacts.is_empty() {
                println!("no contacts yet; add one with `kith contacts add <invite>`");
            }
            for contact in contacts {
                println!("{}", contact_line(&contact.user_id, &contact.name));
            }
        }
        Command::Send {
            user,
            file: Some(path),
            caption,
            ..
        } => {
            let sent = send_file(client, &user, &path, caption.as_deref()).await?;
            println!("{} {} {}", sent.id, status_word(sent.status), sent.hash);
        }
        Command::Media(MediaCommand::Get { hash, output }) => {
            get_media(client, &hash, &output).await?;
        }
        Command::Send {
            user, text, meta, ..
        } => {
            let text = text.unwrap_or_default();
            let meta = match meta {
                None => None,
                Some(raw) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&raw).context("--meta is not valid JSON")?;
                    if !value.is_object() {
                        bail!("--meta must be a JSON object, like '{{\"key\":\"value\"}}'");
                    }
                    Some(value)
                }
            };
            let sent = client.send_text(&user, &text, meta.as_ref()).await?;
            println!("{} {}", sent.id, status_word(sent.status));
        }
        Command::History {
            user,
            offset,
            count,
        } => {
            let page = client
                .conversation(&user, Some(offset), count, None)
                .await?;
            if page.messages.is_empty() {
                println!("no messages");
            }
            for message in page.messages.iter().rev() {
                println!("{}", history_line(message));
            }
            if let Some(next) = page.next_offset {
                let count = count.map(|c| format!(" --count {c}")).unwrap_or_default();
                println!("-- older: kith history {user} --offset {next}{count}");
            }
        }
        Command::Read { user } => {
            let marked = client.mark_read(&user).await?;
            println!(
                "marked {marked} message{} read",
                if marked == 1 { "" } else { "s" }
            );
        }
        Command::Presence { user } => {
            let presence = client.presence(&user).await?;
            if presence.online {
                println!("online");
            } else if let Some(ms) = presence.last_seen_ms {
                println!("last seen {}", time_of(ms));
            } else {
                println!("last seen hidden");
            }
        }
        Command::Init
        | Command::Run(_)
        | Command::Token
        | Command::Demo { .. }
        | Command::Open { .. } => {
            bail!("internal: command does not use the API")
        }
    }
    Ok(())
}

fn contact_line(user_id: &str, name: &str) -> String {
    if name.is_empty() {
        user_id.to_string()
    } else {
        format!("{user_id}  {name}")
    }
}

/// A unix-millisecond time as RFC 3339 to the second (UTC).
fn time_of(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn status_word(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Read => "read",
    }
}

fn tick(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "…",
        DeliveryStatus::Sent => "✓",
        DeliveryStatus::Delivered => "✓✓",
        DeliveryStatus::Read => "✓✓ read",
    }
}

/// `time  →  text  tick` for outgoing, `time  ←  text` for incoming; continuation lines of a
/// multi-line text are indented under the first.
fn history_line(message: &MessageView) -> String {
    let time = time_of(message.sent_at_ms);
    let arrow = if message.outgoing { "→" } else { "←" };
    let indent = " ".repeat(time.chars().count() + 5);
    let text = message.text.replace('\n', &format!("\n{indent}"));
    if message.outgoing {
        format!("{time}  {arrow}  {text}  {}", tick(message.status))
    } else {
        format!("{time}  {arrow}  {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bootstrap_accepts_comma_separated_addresses() {
        let cli = Cli::try_parse_from([
            "kith",
            "run",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
            "--heartbeat",
            "2s",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.bootstrap.len(), 2);
        assert_eq!(args.heartbeat, Some(Duration::from_secs(2)));
    }

    #[test]
    fn history_lines_show_direction_and_ticks() {
        let message = MessageView {
            id: "00".into(),
            from: "a".into(),
            to: "b".into(),
            text: "hi".into(),
            client_meta: serde_json::json!({}),
            sent_at: String::new(),
            sent_at_ms: 1_000,
            status: DeliveryStatus::Read,
            outgoing: true,
            media: None,
        };
        assert_eq!(
            history_line(&message),
            "1970-01-01T00:00:01Z  →  hi  ✓✓ read"
        );
        let incoming = MessageView {
            outgoing: false,
            ..message
        };
        assert_eq!(history_line(&incoming), "1970-01-01T00:00:01Z  ←  hi");
    }
}
