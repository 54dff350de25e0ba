//! The `kith` command line as clap reads it: the global flags, every command and its flags
//! and help. It lives apart from `main.rs` so that the help, the shell completions and the man
//! page (`kith completions`, `kith man`) all come from this one definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kith_node::Config;

use super::run::RunArgs;

/// How a read command prints its answer.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct Output {
    /// Print the answer as JSON (the API's shape, see docs/api/openapi.json) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Kith: a peer-to-peer messenger. Your node delivers messages straight to your contacts'
/// nodes; there is no server.
#[derive(Parser, Debug)]
#[command(name = "kith", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Where this node keeps its identity, API token and messages.
    #[arg(long, env = "KITH_DATA_DIR", global = true, default_value_os_t = Config::default_data_dir())]
    pub data_dir: PathBuf,

    /// The node's REST API: the address `kith run` serves on and other commands talk to.
    #[arg(long, env = "KITH_API", global = true, default_value = kith_node::config::DEFAULT_API)]
    pub api: String,

    #[command(subcommand)]
    pub command: Command,
}

/// `kith backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write an encrypted backup of this node (running or stopped) to a new file.
    Create {
        /// The file to write (must not exist).
        file: PathBuf,
        /// Include the media files (photos, videos) too.
        #[arg(long)]
        media: bool,
    },
    /// Bring a node back from a backup into an empty data directory (`--data-dir`).
    Restore {
        /// The backup file.
        file: PathBuf,
    },
}

/// `kith media ...`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
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
pub enum GroupCommand {
    /// Create a group with some of your contacts (you are its admin).
    Create {
        /// The group's name (1 to 100 bytes).
        name: String,
        /// The contacts' user ids.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// List your groups (and those you left).
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Show a group's members, admins and epoch.
    Info {
        /// The group.
        group: String,
        #[command(flatten)]
        output: Output,
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
  kith history <user> --json         the same as JSON (every read command takes --json)
  kith completions bash > ~/.local/share/bash-completion/completions/kith
  kith man > kith.1                  the manual page

Two nodes on one machine:
  kith --data-dir /tmp/a init && kith --data-dir /tmp/a --api 127.0.0.1:7001 run
  kith --data-dir /tmp/b init && kith --data-dir /tmp/b --api 127.0.0.1:7002 run";

#[derive(Subcommand, Debug)]
pub enum Command {
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
    Invite {
        #[command(flatten)]
        output: Output,
    },
    /// Show this node's user id, addresses and invite.
    Me {
        #[command(flatten)]
        output: Output,
    },
    /// Add, list or remove contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// List message requests: people who wrote to you without being a contact. Nothing is
    /// sent to them (no receipt, no dial) until you `kith accept` them.
    Requests {
        #[command(flatten)]
        output: Output,
    },
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
    Blocked {
        #[command(flatten)]
        output: Output,
    },
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
        #[command(flatten)]
        output: Output,
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
        #[command(flatten)]
        output: Output,
    },
    /// Show whether a contact is online, or when they were last seen.
    Presence {
        /// The contact's user id.
        user: String,
        #[command(flatten)]
        output: Output,
    },
    /// Show your settings, or change the ones given.
    #[command(after_help = "\
Examples:
  kith settings
  kith settings --profile-name Ann --last-seen contacts --read-receipts off")]
    Settings(super::settings::SettingsArgs),
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
    /// Print a shell completion script for kith.
    #[command(after_help = "\
Examples:
  kith completions bash > ~/.local/share/bash-completion/completions/kith
  kith completions zsh > ~/.zfunc/_kith        # with `fpath+=~/.zfunc` before compinit
  kith completions fish > ~/.config/fish/completions/kith.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Back up this node (identity, contacts, sessions, history; media with --media) to
    /// an encrypted file, or restore one into an empty data directory.
    #[command(
        subcommand,
        after_help = "\
The passphrase comes from KITH_BACKUP_PASSPHRASE, or is asked on the terminal.

Examples:
  kith backup create ~/kith.backup
  kith backup create --media ~/kith-with-media.backup
  kith --data-dir ~/.local/share/kith-new backup restore ~/kith.backup"
    )]
    Backup(BackupCommand),
    /// Print kith's manual page (roff), e.g. `kith man | man -l -`.
    Man,
    /// Print the node API's OpenAPI document (docs/api/openapi.json; a running node serves it
    /// at /v1/openapi.json).
    Openapi,
}

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Add a contact from their invite (`kith invite` on their machine prints it).
    Add {
        /// The invite string.
        invite: String,
        /// A name to show for them.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your contacts.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Remove a contact (their history stays; what was still to be sent to them is dropped).
    Remove {
        /// Their user id.
        user: String,
    },
}
