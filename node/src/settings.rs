//! The user's settings (`GET`/`PUT /v1/settings`, `kith settings`): profile name, last-seen
//! and read-receipt privacy, media auto-download, notifications.
//!
//! They exist so a user can change these while the node runs and keep them across restarts;
//! the config ([`crate::Config`]) only gives defaults. This module is pure: the types the API
//! shows, how a change is checked and applied, and what each choice means; the messenger
//! (the one writer) keeps them in sled's `meta` tree (`settings.<field>`, one key per field,
//! so adding a field later never makes the stored ones unreadable).

use kith_protocol::{payload::MAX_PROFILE_NAME_LEN, Visibility};
use serde::{Deserialize, Serialize};

use crate::{error::NodeError, Config};

/// Who sees the local user's online state and last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LastSeen {
    /// Anyone who asks (store peers serve it without the mailbox access key).
    Everyone,
    /// Only contacts (store peers serve it to holders of the access key): the default.
    #[default]
    Contacts,
    /// Nobody; and, mutually, the user sees nobody's.
    Nobody,
}

impl LastSeen {
    /// The visibility signed into presence records.
    pub fn visibility(self) -> Visibility {
        match self {
            LastSeen::Everyone => Visibility::Everyone,
            LastSeen::Contacts => Visibility::Contacts,
            LastSeen::Nobody => Visibility::Nobody,
        }
    }

    /// Whether the user shares it at all (and so may see others').
    pub fn shares(self) -> bool {
        self != LastSeen::Nobody
    }
}

/// The settings in effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settings {
    /// The name contacts see for the user (unless they named them), sent inside the
    /// end-to-end channel; may be empty.
    pub profile_name: String,
    /// Who sees the user's last seen (mutual: with `nobody` the user sees nobody's).
    pub last_seen: LastSeen,
    /// The deprecated boolean form of `last_seen` (false = `nobody`), still accepted.
    pub share_last_seen: bool,
    /// Whether read receipts are sent (mutual: with them off, nobody's blue ticks show).
    pub read_receipts: bool,
    /// Received media up to this size (bytes) is fetched at once; larger waits for the user.
    pub auto_download_bytes: u64,
    /// Fetch media at once only from contacts the user named (not from those a group
    /// introduced); a message request's media always waits.
    pub auto_download_contacts_only: bool,
    /// Whether the web app shows notifications (stored here, read by the app).
    pub notifications: bool,
}

impl Settings {
    /// The defaults a node without stored settings has under `cfg`.
    pub fn defaults(cfg: &Config) -> Self {
        let last_seen = if cfg.share_last_seen {
            LastSeen::Contacts
        } else {
            LastSeen::Nobody
        };
        Settings {
            profile_name: String::new(),
            last_seen,
            share_last_seen: last_seen.shares(),
            read_receipts: true,
            auto_download_bytes: cfg.auto_download_bytes,
            auto_download_contacts_only: false,
            notifications: true,
        }
    }

    /// Whether media of `size` bytes from a contact is fetched at once; `named` is whether
    /// the user named that contact.
    pub fn auto_downloads(&self, size: u64, named: bool) -> bool {
        size <= self.auto_download_bytes && (named || !self.auto_download_contacts_only)
    }
}

/// A change to the settings (`PUT /v1/settings`): only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// See [`Settings::profile_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// See [`Settings::last_seen`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<LastSeen>,
    /// The older boolean form: `true` is `contacts` (what sharing meant), `false` is `nobody`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_last_seen: Option<bool>,
    /// See [`Settings::read_receipts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_receipts: Option<bool>,
    /// See [`Settings::auto_download_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_download_bytes: Option<u64>,
    /// See [`Settings::auto_download_contacts_only`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_download_contacts_only: Option<bool>,
    /// See [`Settings::notifications`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<bool>,
}

/// What applying a change altered, for the messenger to act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The profile (name or read-receipt choice) contacts hold changed: send it again.
    pub profile: bool,
    /// The last-seen choice changed: contacts must hear a new presence record now.
    pub last_seen: bool,
}

impl SettingsChange {
    /// Checks the change: a profile name within the protocol's limit, with no control
    /// characters, trimmed; `last_seen` and `share_last_seen` not both.
    pub fn checked(mut self) -> Result<Self, NodeError> {
        if let Some(name) = self.profile_name.take() {
            let name = name.trim().to_string();
            if name.len() > MAX_PROFILE_NAME_LEN {
                return Err(NodeError::TooLarge {
                    what: "profile_name",
                    len: name.len(),
                    max: MAX_PROFILE_NAME_LEN,
                });
            }
            if name.chars().any(char::is_control) {
                return Err(NodeError::InvalidInput(
                    "profile_name must not contain control characters".into(),
                ));
            }
            self.profile_name = Some(name);
        }
        if self.last_seen.is_some() && self.share_last_seen.is_some() {
            return Err(NodeError::InvalidInput(
                "give `last_seen` or the older `share_last_seen`, not both".into(),
            ));
        }
        if let Some(share) = self.share_last_seen.take() {
            self.last_seen = Some(if share {
                LastSeen::Contacts
            } else {
                LastSeen::Nobody
            });
        }
        Ok(self)
    }

    /// Applies a [`checked`](Self::checked) change to `settings`; says what moved.
    pub fn apply(&self, settings: &mut Settings) -> Changed {
        let mut changed = Changed::default();
        if let Some(name) = &self.profile_name {
            changed.profile |= *name != settings.profile_name;
            settings.profile_name = name.clone();
        }
        if let Some(on) = self.read_receipts {
            changed.profile |= on != settings.read_receipts;
            settings.read_receipts = on;
        }
        if let Some(last_seen) = self.last_seen {
            changed.last_seen = last_seen != settings.last_seen;
            settings.last_seen = last_seen;
            settings.share_last_seen = last_seen.shares();
        }
        if let Some(bytes) = self.auto_download_bytes {
            settings.auto_download_bytes = bytes;
        }
        if let Some(only) = self.auto_download_contacts_only {
            settings.auto_download_contacts_only = only;
        }
        if let Some(on) = self.notifications {
            settings.notifications = on;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::defaults(&Config::default())
    }

    #[test]
    fn only_the_fields_given_change_and_what_moved_is_said() {
        let mut s = settings();
        let change = SettingsChange {
            profile_name: Some("  Ann ".into()),
            ..Default::default()
        }
        .checked()
        .expect("valid");
        let changed = change.apply(&mut s);
        assert_eq!(s.profile_name, "Ann");
        assert!(changed.profile && !changed.last_seen);
        assert!(s.read_receipts && s.notifications);
        // The same again moves nothing.
        assert_eq!(change.apply(&mut s), Changed::default());
        let changed = SettingsChange {
            share_last_seen: Some(false),
            ..Default::default()
        }
        .checked()
        .expect("valid")
        .apply(&mut s);
        assert!(changed.last_seen && !changed.profile);
        assert_eq!((s.last_seen, s.share_last_seen), (LastSeen::Nobody, false));
    }

    #[test]
    fn bad_changes_are_refused() {
        let long = SettingsChange {
            profile_name: Some("x".repeat(MAX_PROFILE_NAME_LEN + 1)),
            ..Default::default()
        };
        assert!(matches!(long.checked(), Err(NodeError::TooLarge { .. })));
        let control = SettingsChange {
            profile_name: Some("a\u{7}b".into()),
            ..Default::default()
        };
        assert!(control.checked().is_err());
        let both = SettingsChange {
            last_seen: Some(LastSeen::Contacts),
            share_last_seen: Some(true),
            ..Default::default()
        };
        assert!(both.checked().is_err());
    }

    #[test]
    fn contacts_only_keeps_media_of_unnamed_contacts_waiting() {
        let mut s = settings();
        assert!(s.auto_downloads(10, false));
        s.auto_download_contacts_only = true;
        assert!(!s.auto_downloads(10, false));
        assert!(s.auto_downloads(10, true));
        assert!(!s.auto_downloads(s.auto_download_bytes + 1, true));
    }
}
