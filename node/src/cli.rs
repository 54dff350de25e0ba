//! The `kith` binary's command line ([`args`]) and handlers, one file per group: [`run`]
//! (init, token, run, open), [`demo`], [`client`] (commands through the REST API) with
//! [`groups`] (group chats), [`media`] (files), [`print`] (how answers are printed), [`out`]
//! (stdout that survives a closed pipe) and [`progress`] (progress bars).
//!
//! Nothing here is a library API: tests drive nodes through `kith_node` directly.

pub mod args;
pub mod backup;
pub mod client;
pub mod demo;
pub mod groups;
pub mod media;
pub mod out;
pub mod print;
pub mod progress;
pub mod run;
pub mod settings;
