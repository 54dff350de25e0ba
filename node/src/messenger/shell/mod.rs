//! The shell of the messenger: the code that acts on the pure parts' decisions — sends frames,
//! writes the store, publishes events, starts timers and tasks. It is the only code that calls
//! across parts, reads the clock or touches I/O; each file here drives the part of the same
//! name (`inbox`, `mailbox` and `media` have no pure part of their own yet).

pub(in crate::messenger) mod access;
mod contacts;
mod group_messages;
mod groups;
mod history;
pub(in crate::messenger) mod inbox;
pub(in crate::messenger) mod mailbox;
mod media;
mod outbox;
mod peers;
mod presence;
mod requests;
mod sessions;
mod settings;
