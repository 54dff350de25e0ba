//! Kith's fuzz targets, run by AFL++ through cargo-afl (see scripts/fuzz.sh and
//! docs/security.md "Fuzzing"): one binary runs any target by name.

pub mod budget;
#[cfg(feature = "node")]
pub mod node;
pub mod protocol;
pub mod seeds;

use protocol::Target;

/// The target called `name`, among the protocol targets and (with the `node` feature) the node
/// and store peer targets.
pub fn target(name: &str) -> Option<Target> {
    let all = protocol::TARGETS.iter();
    #[cfg(feature = "node")]
    let all = all.chain(node::TARGETS.iter());
    all.clone().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Every target name.
pub fn names() -> Vec<&'static str> {
    let all = protocol::TARGETS.iter();
    #[cfg(feature = "node")]
    let all = all.chain(node::TARGETS.iter());
    all.map(|(n, _)| *n).collect()
}
