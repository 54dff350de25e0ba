//! Invite strings (`kith_node::invite`): they round-trip, and anything tampered with is
//! refused when parsed.

#![allow(clippy::unwrap_used)]

use anyhow::{bail, ensure, Result};
use kith_node::invite::{Invite, InviteError, MAX_ADDRS, MAX_INVITE_LEN, PREFIX};
use kith_protocol::{identity::BundleError, LocalIdentity};
use libp2p::Multiaddr;
use rand::rngs::OsRng;

fn identity() -> LocalIdentity {
    LocalIdentity::generate(1_700_000_000_000, &mut OsRng)
}

fn addrs(user: &LocalIdentity) -> Result<Vec<Multiaddr>> {
    let peer = user.user_id().peer_id();
    Ok(vec![
        format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}").parse()?,
        "/ip6/::1/tcp/4002".parse()?,
        "/dns4/example.invalid/tcp/443".parse()?,
    ])
}

#[test]
fn invite_round_trips() -> Result<()> {
    let alice = identity();
    let addrs = addrs(&alice)?;
    let invite = Invite::new(alice.bundle(), &addrs);
    let s = invite.encode()?;
    ensure!(s.starts_with(PREFIX), "{s}");
    ensure!(
        s.len() <= MAX_INVITE_LEN,
        "an ordinary invite fits: {}",
        s.len()
    );
    let back = Invite::decode(&s)?;
    ensure!(back.user() == alice.user_id());
    ensure!(back.bundle == alice.bundle());
    ensure!(back.multiaddrs() == addrs, "{:?}", back.multiaddrs());
    // Surrounding whitespace (a pasted invite) is fine.
    let back = Invite::decode(&format!("  {s}\n"))?;
    ensure!(back.user() == alice.user_id());
    // No addresses is a valid invite too.
    let bare = Invite::decode(&Invite::new(alice.bundle(), &[]).encode()?)?;
    ensure!(bare.multiaddrs().is_empty() && bare.bundle == alice.bundle());
    Ok(())
}

#[test]
fn tampered_invites_are_refused() -> Result<()> {
    let alice = identity();
    let mallory = identity();
    let good = Invite::new(alice.bundle(), &addrs(&alice)?);

    // `Invite::encode` checks nothing, so it writes what a tamperer would.
    // A key swapped inside a correctly signed bundle: the signature no longer matches.
    let mut swapped = good.clone();
    swapped.bundle.static_key = mallory.bundle().static_key;
    match Invite::decode(&swapped.encode()?) {
        Err(InviteError::Bundle(BundleError::BadSignature)) => {}
        other => bail!("swapped static key: {other:?}"),
    }
    let mut swapped = good.clone();
    swapped.bundle.prekey = mallory.bundle().prekey;
    match Invite::decode(&swapped.encode()?) {
        Err(InviteError::Bundle(BundleError::BadSignature)) => {}
        other => bail!("swapped prekey: {other:?}"),
    }
    // Alice's keys under mallory's user id.
    let mut renamed = good.clone();
    renamed.bundle.user = mallory.user_id();
    match Invite::decode(&renamed.encode()?) {
        Err(InviteError::Bundle(BundleError::UserIdMismatch)) => {}
        other => bail!("renamed user: {other:?}"),
    }

    // Every single-character change of the string is refused or decodes to the same invite
    // (base58 has no redundancy, so a change lands in the bundle, the addresses or the codec).
    let s = good.encode()?;
    let alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut refused = 0;
    for (i, c) in s.char_indices().skip(PREFIX.len()) {
        let replacement = alphabet.chars().find(|r| *r != c).unwrap();
        let mut t = s.clone();
        t.replace_range(i..i + c.len_utf8(), &replacement.to_string());
        match Invite::decode(&t) {
            Err(_) => refused += 1,
            Ok(inv) => {
                // Only the addresses are unsigned: a changed byte there may still parse.
                ensure!(
                    inv.bundle == good.bundle,
                    "a changed invite decoded with another bundle at {i}"
                );
            }
        }
    }
    ensure!(refused > 0, "no change was refused");

    // Format errors.
    ensure!(matches!(
        Invite::decode(&s[PREFIX.len()..]),
        Err(InviteError::Prefix)
    ));
    ensure!(matches!(
        Invite::decode(&format!("{PREFIX}0OIl")),
        Err(InviteError::Encoding)
    ));
    ensure!(
        Invite::decode(&format!("{s}1111")).is_err(),
        "extended invite"
    );
    ensure!(
        Invite::decode(&s[..s.len() - 10]).is_err(),
        "truncated invite"
    );
    ensure!(matches!(
        Invite::decode(&format!("{PREFIX}{}", "2".repeat(MAX_INVITE_LEN))),
        Err(InviteError::TooLong)
    ));
    let crowded = Invite {
        access: None,
        bundle: alice.bundle(),
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>()?.to_vec(); MAX_ADDRS + 1],
    };
    ensure!(matches!(
        Invite::decode(&crowded.encode()?),
        Err(InviteError::TooManyAddrs)
    ));
    Ok(())
}
