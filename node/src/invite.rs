//! Invites: one string that carries a user's id, addresses and signed key bundle, so two
//! people can introduce their nodes without any directory.
//!
//! Format: `kith:` followed by base58 of bincode(`Invite`). The bundle's signature is checked
//! when an invite is parsed; the user id is the bundle's.

use kith_protocol::{codec, KeyBundle, UserId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// The prefix of every invite string.
pub const PREFIX: &str = "kith:";

/// Longest invite string accepted (a bundle plus a few dozen addresses fit easily).
pub const MAX_INVITE_LEN: usize = 8 * 1024;

/// Most addresses an invite may carry.
pub const MAX_ADDRS: usize = 32;

/// What an invite carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invite {
    /// The user's signed key bundle (its `user` is the user id).
    pub bundle: KeyBundle,
    /// Addresses to reach the user's node at (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// The user's mailbox access key: whoever holds the invite may deposit into the
    /// user's mailbox as a contact would (see `kith_protocol::access`).
    pub access: Option<kith_protocol::MailboxAccessKey>,
}

/// Why an invite string was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// It does not start with `kith:`.
    #[error("an invite starts with `kith:`")]
    Prefix,
    /// Longer than [`MAX_INVITE_LEN`].
    #[error("invite is too long")]
    TooLong,
    /// Not base58.
    #[error("invite is not valid base58")]
    Encoding,
    /// The contents do not decode.
    #[error("invite contents do not decode: {0}")]
    Codec(#[from] codec::CodecError),
    /// The bundle's signature or user id is wrong.
    #[error("invite key bundle is invalid: {0}")]
    Bundle(#[from] kith_protocol::identity::BundleError),
    /// More than [`MAX_ADDRS`] addresses.
    #[error("invite carries too many addresses")]
    TooManyAddrs,
}

impl Invite {
    /// An invite for `bundle` reachable at `addrs`.
    pub fn new(bundle: KeyBundle, addrs: &[Multiaddr]) -> Self {
        Invite {
            bundle,
            addrs: addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect(),
            access: None,
        }
    }

    /// The same invite, also carrying the user's mailbox access key.
    pub fn with_access(mut self, key: kith_protocol::MailboxAccessKey) -> Self {
        self.access = Some(key);
        self
    }

    /// The user the invite introduces.
    pub fn user(&self) -> UserId {
        self.bundle.user
    }

    /// The addresses, parsed (unparsable ones are skipped).
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }

    /// The invite string.
    pub fn encode(&self) -> Result<String, codec::CodecError> {
        Ok(format!(
            "{PREFIX}{}",
            bs58::encode(codec::encode(self)?).into_string()
        ))
    }

    /// Parses and verifies an invite string.
    pub fn decode(s: &str) -> Result<Self, InviteError> {
        let s = s.trim();
        if s.len() > MAX_INVITE_LEN {
            return Err(InviteError::TooLong);
        }
        let body = s.strip_prefix(PREFIX).ok_or(InviteError::Prefix)?;
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|_| InviteError::Encoding)?;
        let invite: Invite = codec::decode(&bytes)?;
        if invite.addrs.len() > MAX_ADDRS {
            return Err(InviteError::TooManyAddrs);
        }
        invite.bundle.verify()?;
        Ok(invite)
    }
}
