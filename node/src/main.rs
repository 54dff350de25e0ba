//! The `kith` binary: parses the command line, sets up tracing and dispatches to a handler
//! in [`cli`]: either running a node (`kith run`) or talking to a running one through its
//! REST API. Everything else lives in the `kith_node` library so tests can start nodes
//! in-process.

mod cli;

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use kith_node::{client::ApiClient, Config};

use cli::run::{RunArgs, RunFlags};

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
    /// Fetch a received file that waits for you (larger than the auto-download size), or
    /// try a failed download again.
    Fetch {
        /// The media hash (from `kith history`).
        hash: String,
    },
}

/// `kith group ...`: a `<group>` is its id (32 hex digits, `kith group list`) or its name.
#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group with some of your contacts (you are its admin).
    Create {
        /// The group's name (1 to 100 bytes).
        name: String,
        /// The contacts' user ids.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// List your groups (and those you left).
    List,
    /// Show a group's members, admins and epoch.
    Info {
        /// The group.
        group: String,
    },
    /// Add a contact to a group (admins only).
    Add {
        /// The group.
        group: String,
        /// The contact's user id.
        user: String,
    },
    /// Remove a member from a group (admins only); they cannot read what follows.
    Remove {
        /// The group.
        group: String,
        /// The member's user id.
        user: String,
    },
    /// Leave a group.
    Leave {
        /// The group.
        group: String,
    },
    /// Rename a group (admins only).
    Rename {
        /// The group.
        group: String,
        /// Its new name.
        name: String,
    },
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
  kith requests                      who wrote to you without being a contact
  kith accept <user>                 make a request's sender a contact (or: kith block <user>)
  kith history <user>                show the conversation with ticks
  kith group create Climbing <user> <user>   a group chat with two contacts
  kith send <group-id> 'hi all'      send to a group (ids: kith group list)
  kith info <message-id>             who has read a group message
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
    /// Add, list or remove contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// List message requests: people who wrote to you without being a contact. Nothing is
    /// sent to them (no receipt, no dial) until you `kith accept` them.
    Requests,
    /// Accept a message request: its sender becomes a contact.
    Accept {
        /// The sender's user id (from `kith requests`).
        user: String,
    },
    /// Block a user (a request or a contact): what they send is dropped, and they are not told.
    Block {
        /// Their user id.
        user: String,
    },
    /// Unblock a user.
    Unblock {
        /// Their user id.
        user: String,
    },
    /// List blocked users.
    Blocked,
    /// Send a text message to a contact or a group.
    #[command(after_help = "\
Examples:
  kith send 12D3KooW... 'see you at 8'
  kith send 0123456789abcdef0123456789abcdef 'hi all'
  kith send 12D3KooW... 'draft' --meta '{\"client\":\"cli\"}'")]
    Send {
        /// The contact's user id, or a group id (32 hex digits).
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
    /// Show a page of the conversation with a contact or a group, oldest first.
    ///
    /// Outgoing messages show their ticks: `…` pending, `✓` sent, `✓✓` delivered,
    /// `✓✓ read` read (in a group: by every member; `kith info <id>` shows each one's).
    /// A group's incoming messages show their sender.
    History {
        /// The contact's user id, or a group id (32 hex digits).
        user: String,
        /// Skip this many newest messages (the previous page prints the next value).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// How many messages to show, 1 to 200 [default: 50].
        #[arg(long)]
        count: Option<usize>,
    },
    /// Mark the conversation with a contact or a group read (sends read receipts).
    Read {
        /// The contact's user id, or a group id.
        user: String,
    },
    /// Group chats: create, list, show, add and remove members, leave, rename.
    #[command(
        subcommand,
        after_help = "\
Examples:
  kith group create Climbing 12D3KooW...bob 12D3KooW...carol
  kith group list
  kith group info Climbing
  kith group remove Climbing 12D3KooW...carol
  kith send <group-id> 'hi all'"
    )]
    Group(GroupCommand),
    /// Show a sent group message's status per member (delivered, read...).
    Info {
        /// The message id (from `kith send` or `kith history`).
        message: String,
    },
    /// Show whether a contact is online, or when they were last seen.
    Presence {
        /// The contact's user id.
        user: String,
    },
    /// Show your settings, or change the ones given.
    #[command(after_help = "\
Examples:
  kith settings
  kith settings --profile-name Ann --last-seen contacts --read-receipts off")]
    Settings(cli::settings::SettingsArgs),
    /// Show the safety number of your conversation with a contact (compare it with theirs),
    /// and mark it verified.
    Verify {
        /// The contact's user id.
        user: String,
        /// Mark it verified (after comparing).
        #[arg(long, conflicts_with = "unmark")]
        mark: bool,
        /// Clear the verified mark.
        #[arg(long)]
        unmark: bool,
    },
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
    /// Remove a contact (their history stays; what was still to be sent to them is dropped).
    Remove {
        /// Their user id.
        user: String,
    },
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
        Command::Init => cli::run::init(&data_dir),
        Command::Run(args) => {
            init_tracing("info");
            let config = Config::try_from(RunFlags {
                data_dir,
                api: cli.api,
                args,
            })?;
            cli::run::run(config).await
        }
        Command::Token => {
            println!("{}", cli::run::token(&data_dir)?);
            Ok(())
        }
        Command::Demo { dir, port } => {
            init_tracing("warn");
            cli::demo::demo(dir, port).await
        }
        Command::Open { print } => cli::run::open(&data_dir, &cli.api, print).await,
        command => {
            init_tracing("warn");
            let client = ApiClient::new(&cli.api, cli::run::token(&data_dir)?)?;
            client_command(&client, command).await
        }
    }
}

/// The commands that go through the node's REST API.
async fn client_command(client: &ApiClient, command: Command) -> Result<()> {
    use cli::client;
    match command {
        Command::Invite => client::invite(client).await,
        Command::Contacts(ContactsCommand::Add { invite, name }) => {
            client::add_contact(client, &invite, name.as_deref()).await
        }
        Command::Contacts(ContactsCommand::List) => client::list_contacts(client).await,
        Command::Contacts(ContactsCommand::Remove { user }) => {
            client::remove_contact(client, &user).await
        }
        Command::Requests => client::requests(client).await,
        Command::Accept { user } => client::accept(client, &user).await,
        Command::Block { user } => client::block(client, &user).await,
        Command::Unblock { user } => client::unblock(client, &user).await,
        Command::Blocked => client::blocked(client).await,
        Command::Send {
            user,
            file: Some(path),
            caption,
            ..
        } => client::send_file(client, &user, &path, caption.as_deref()).await,
        Command::Media(MediaCommand::Fetch { hash }) => {
            cli::media::fetch_media(client, &hash).await
        }
        Command::Media(MediaCommand::Get { hash, output }) => {
            cli::media::get_media(client, &hash, &output).await
        }
        Command::Send {
            user, text, meta, ..
        } => client::send_text(client, &user, text, meta).await,
        Command::History {
            user,
            offset,
            count,
        } => client::history(client, &user, offset, count).await,
        Command::Read { user } => client::mark_read(client, &user).await,
        Command::Presence { user } => client::presence(client, &user).await,
        Command::Settings(args) => cli::settings::settings(client, args).await,
        Command::Verify { user, mark, unmark } => {
            let change = (mark || unmark).then_some(mark);
            cli::settings::verify(client, &user, change).await
        }
        Command::Group(command) => group_command(client, command).await,
        Command::Info { message } => cli::groups::message_info(client, &message).await,
        Command::Init
        | Command::Run(_)
        | Command::Token
        | Command::Demo { .. }
        | Command::Open { .. } => {
            anyhow::bail!("internal: command does not use the API")
        }
    }
}

/// `kith group ...`.
async fn group_command(client: &ApiClient, command: GroupCommand) -> Result<()> {
    use cli::groups;
    match command {
        GroupCommand::Create { name, users } => groups::create(client, &name, &users).await,
        GroupCommand::List => groups::list(client).await,
        GroupCommand::Info { group } => groups::info(client, &group).await,
        GroupCommand::Add { group, user } => groups::add(client, &group, &user).await,
        GroupCommand::Remove { group, user } => groups::remove(client, &group, &user).await,
        GroupCommand::Leave { group } => groups::leave(client, &group).await,
        GroupCommand::Rename { group, name } => groups::rename(client, &group, &name).await,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn group_commands_parse() {
        let cli = Cli::try_parse_from(["kith", "group", "create", "Climbing", "a", "b"])
            .expect("valid create");
        let Command::Group(GroupCommand::Create { name, users }) = cli.command else {
            panic!("expected group create");
        };
        assert_eq!((name.as_str(), users.len()), ("Climbing", 2));
        assert!(Cli::try_parse_from(["kith", "group", "create", "Climbing"]).is_err());
        let cli = Cli::try_parse_from(["kith", "group", "remove", "g", "u"]).expect("remove");
        assert!(matches!(
            cli.command,
            Command::Group(GroupCommand::Remove { .. })
        ));
        let cli = Cli::try_parse_from(["kith", "info", "ab"]).expect("info");
        assert!(matches!(cli.command, Command::Info { .. }));
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
    fn run_flags_build_the_config_over_laptop_defaults() {
        let cli = Cli::try_parse_from([
            "kith",
            "--data-dir",
            "/tmp/kith-x",
            "--api",
            "127.0.0.1:7001",
            "run",
            "--hide-last-seen",
            "--max-media-mib",
            "2",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let config = Config::try_from(RunFlags {
            data_dir: cli.data_dir,
            api: cli.api,
            args,
        })
        .expect("valid config");
        let defaults = Config::new("/tmp/kith-x".into());
        assert_eq!(config.api.port(), 7001);
        assert!(!config.share_last_seen);
        assert_eq!(config.max_media_bytes, 2 * 1024 * 1024);
        assert_eq!(config.heartbeat, defaults.heartbeat);
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.data_dir, defaults.data_dir);
    }

    #[test]
    fn a_zero_heartbeat_or_a_bad_api_is_refused() {
        let flags = |api: &str, heartbeat: &str| {
            let cli = Cli::try_parse_from(["kith", "--api", api, "run", "--heartbeat", heartbeat])
                .expect("valid flags");
            let Command::Run(args) = cli.command else {
                panic!("expected run");
            };
            RunFlags {
                data_dir: cli.data_dir,
                api: cli.api,
                args,
            }
        };
        assert!(Config::try_from(flags("127.0.0.1:1", "0s")).is_err());
        assert!(Config::try_from(flags("nowhere", "1s")).is_err());
        assert!(Config::try_from(flags("127.0.0.1:1", "1s")).is_ok());
    }
}
