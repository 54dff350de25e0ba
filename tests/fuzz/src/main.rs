//! The fuzz binary: `kith-fuzz <target>` runs one target under AFL++ (`cargo afl fuzz ...
//! target/release/kith-fuzz <target>`); see scripts/fuzz.sh.

use std::alloc::System;

use cap::Cap;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    if name == "list" {
        kith_fuzz::names().iter().for_each(|n| println!("{n}"));
        return;
    }
    let Some(target) = kith_fuzz::target(&name) else {
        eprintln!(
            "usage: kith-fuzz <target>; targets: {}",
            kith_fuzz::names().join(" ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        kith_fuzz::budget::run_within_budget(&ALLOC, target, data);
    });
}
