//! `kith settings` (show, or change the fields given) and `kith verify` (a contact's safety
//! number, and the verified mark).

use anyhow::Result;
use clap::{builder::BoolishValueParser, Args};
use kith_node::{
    client::ApiClient,
    settings::{LastSeen, Settings, SettingsChange},
};

/// `kith settings` flags: each one given changes that setting; none shows them.
#[derive(Args, Debug, Default)]
pub struct SettingsArgs {
    /// The name your contacts see (unless they named you); "" for none.
    #[arg(long, value_name = "NAME")]
    pub profile_name: Option<String>,
    /// Who sees your last seen and online: everyone, contacts or nobody (mutual: with
    /// nobody you see nobody's).
    #[arg(long, value_name = "WHO", value_parser = ["everyone", "contacts", "nobody"])]
    pub last_seen: Option<String>,
    /// Send read receipts: on or off (mutual: with off, you see no blue ticks either).
    #[arg(long, value_name = "on|off", value_parser = BoolishValueParser::new())]
    pub read_receipts: Option<bool>,
    /// Fetch received media up to this many MiB at once (larger waits for you).
    #[arg(long, value_name = "MIB")]
    pub auto_download_mib: Option<u64>,
    /// Fetch media at once only from contacts you named: on or off.
    #[arg(long, value_name = "on|off", value_parser = BoolishValueParser::new())]
    pub auto_download_contacts_only: Option<bool>,
    /// Notifications in the web app: on or off.
    #[arg(long, value_name = "on|off", value_parser = BoolishValueParser::new())]
    pub notifications: Option<bool>,
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn print_settings(s: &Settings) {
    let name = if s.profile_name.is_empty() {
        "(none)"
    } else {
        &s.profile_name
    };
    let last_seen = match s.last_seen {
        LastSeen::Everyone => "everyone",
        LastSeen::Contacts => "contacts",
        LastSeen::Nobody => "nobody",
    };
    println!("profile name                 {name}");
    println!("last seen                    {last_seen}");
    println!("read receipts                {}", on_off(s.read_receipts));
    println!(
        "auto-download up to          {} MiB",
        s.auto_download_bytes / (1024 * 1024)
    );
    println!(
        "auto-download contacts only  {}",
        on_off(s.auto_download_contacts_only)
    );
    println!("notifications                {}", on_off(s.notifications));
}

/// `kith settings [flags]`.
pub async fn settings(client: &ApiClient, args: SettingsArgs) -> Result<()> {
    let last_seen = match args.last_seen.as_deref() {
        Some("everyone") => Some(LastSeen::Everyone),
        Some("contacts") => Some(LastSeen::Contacts),
        Some("nobody") => Some(LastSeen::Nobody),
        _ => None,
    };
    let change = SettingsChange {
        profile_name: args.profile_name,
        last_seen,
        read_receipts: args.read_receipts,
        auto_download_bytes: args
            .auto_download_mib
            .map(|mib| mib.saturating_mul(1024 * 1024)),
        auto_download_contacts_only: args.auto_download_contacts_only,
        notifications: args.notifications,
        ..SettingsChange::default()
    };
    let settings = if change == SettingsChange::default() {
        client.settings().await?
    } else {
        client.change_settings(&change).await?
    };
    print_settings(&settings);
    Ok(())
}

/// `kith verify <user> [--mark|--unmark]`.
pub async fn verify(client: &ApiClient, user: &str, mark: Option<bool>) -> Result<()> {
    if let Some(verified) = mark {
        client.set_verified(user, verified).await?;
    }
    let number = client.safety_number(user).await?;
    let who = if number.contact.display_name.is_empty() {
        user.to_string()
    } else {
        format!("{} ({user})", number.contact.display_name)
    };
    println!("safety number with {who}:");
    for row in number.groups.chunks(4) {
        println!("  {}", row.join(" "));
    }
    if let Some(new) = &number.contact.replaced_by {
        println!("their key changed: they now use {new}");
    }
    if let Some(old) = &number.contact.replaces {
        println!("their key changed: they used {old} before");
    }
    if number.verified {
        println!("verified");
    } else {
        println!(
            "not verified: compare it with theirs (`kith verify` on their side), then \
             `kith verify {user} --mark`"
        );
    }
    Ok(())
}
