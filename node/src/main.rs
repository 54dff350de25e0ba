//! The `kith` binary: parses the command line, sets up tracing and dispatches to a handler
//! in [`cli`]: either running a node (`kith run`) or talking to a running one through its
//! REST API. Everything else lives in the `kith_node` library so tests can start nodes
//! in-process.

mod cli;

use std::{io::IsTerminal, process::ExitCode};

use anyhow::Result;
use clap::{CommandFactory, Parser};
use kith_node::{client::ApiClient, Config};

use cli::{
    args::{BackupCommand, Cli, Command, ContactsCommand, GroupCommand, MediaCommand},
    out::{self, outln},
    run::RunFlags,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`kith history … | head`): what it wanted, it has.
        Err(err) if out::is_closed(&err) => ExitCode::SUCCESS,
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
        Command::Token => outln!("{}", cli::run::token(&data_dir)?),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kith", &mut script);
            out::bytes(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            out::bytes(&page)
        }
        Command::Openapi => out::bytes(kith_node::api::openapi::json().as_bytes()),
        Command::Backup(BackupCommand::Create { file, media }) => {
            init_tracing("warn");
            cli::backup::create(&data_dir, &cli.api, &file, media).await
        }
        Command::Backup(BackupCommand::Restore { file }) => {
            init_tracing("warn");
            cli::backup::restore(&data_dir, &file).await
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
        Command::Invite { output } => client::invite(client, output).await,
        Command::Me { output } => client::me(client, output).await,
        Command::Contacts(ContactsCommand::Add { invite, name }) => {
            client::add_contact(client, &invite, name.as_deref()).await
        }
        Command::Contacts(ContactsCommand::List { output }) => {
            client::list_contacts(client, output).await
        }
        Command::Contacts(ContactsCommand::Remove { user }) => {
            client::remove_contact(client, &user).await
        }
        Command::Requests { output } => client::requests(client, output).await,
        Command::Accept { user } => client::accept(client, &user).await,
        Command::Block { user } => client::block(client, &user).await,
        Command::Unblock { user } => client::unblock(client, &user).await,
        Command::Blocked { output } => client::blocked(client, output).await,
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
            output,
        } => client::history(client, &user, (offset, count), output).await,
        Command::Read { user } => client::mark_read(client, &user).await,
        Command::Presence { user, output } => client::presence(client, &user, output).await,
        Command::Settings(args) => cli::settings::settings(client, args).await,
        Command::Verify { user, mark, unmark } => {
            let change = (mark || unmark).then_some(mark);
            cli::settings::verify(client, &user, change).await
        }
        Command::Group(command) => group_command(client, command).await,
        Command::Info { message, output } => {
            cli::groups::message_info(client, &message, output).await
        }
        Command::Init
        | Command::Run(_)
        | Command::Token
        | Command::Demo { .. }
        | Command::Open { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Openapi
        | Command::Backup(_) => {
            anyhow::bail!("internal: command does not use the API")
        }
    }
}

/// `kith group ...`.
async fn group_command(client: &ApiClient, command: GroupCommand) -> Result<()> {
    use cli::groups;
    match command {
        GroupCommand::Create { name, users } => groups::create(client, &name, &users).await,
        GroupCommand::List { output } => groups::list(client, output).await,
        GroupCommand::Info { group, output } => groups::info(client, &group, output).await,
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
    fn read_commands_take_json_and_tools_parse() {
        let reads: [&[&str]; 10] = [
            &["kith", "me", "--json"],
            &["kith", "invite", "--json"],
            &["kith", "contacts", "list", "--json"],
            &["kith", "requests", "--json"],
            &["kith", "blocked", "--json"],
            &["kith", "history", "u", "--json", "--count", "5"],
            &["kith", "presence", "u", "--json"],
            &["kith", "group", "list", "--json"],
            &["kith", "group", "info", "g", "--json"],
            &["kith", "info", "m", "--json"],
        ];
        for args in reads {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["kith", "send", "u", "hi", "--json"]).is_err());
        for shell in ["bash", "zsh", "fish"] {
            let cli = Cli::try_parse_from(["kith", "completions", shell]).expect(shell);
            assert!(matches!(cli.command, Command::Completions { .. }));
        }
        assert!(Cli::try_parse_from(["kith", "completions", "tcsh"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["kith", "man"]).expect("man").command,
            Command::Man
        ));
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
