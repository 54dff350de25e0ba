//! Replays every committed fuzz corpus entry (tests/fuzz/corpus/<target>/*) through the checks
//! its fuzz target runs, without the fuzz engine: the same source files (tests/fuzz/src), so CI
//! re-checks on every change each input the fuzzer found interesting (docs/security.md
//! "Fuzzing"). An entry fails when its decoder panics, an invariant breaks, or one execution
//! holds more than the fuzzing memory budget live.

use std::{alloc::System, path::Path};

use cap::Cap;

// The corpus replay runs the targets only; the fixtures' parts that only the seed generator
// reads are unused here.
#[allow(dead_code)]
#[path = "../fuzz/src/protocol.rs"]
mod protocol;

#[path = "../fuzz/src/node.rs"]
mod node;

#[path = "../fuzz/src/budget.rs"]
mod budget;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

#[test]
fn every_fuzz_corpus_entry_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    let targets = || protocol::TARGETS.iter().chain(node::TARGETS);
    for (name, target) in targets() {
        let dir = corpus.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("target {name} has no corpus at {}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("a readable corpus entry");
            eprintln!("{name}: {}", path.display());
            budget::run_within_budget(&ALLOC, *target, &bytes);
            count += 1;
        }
        assert!(count > 0, "target {name} has an empty corpus");
        replayed += count;
    }
    // Every corpus directory is some target's.
    for entry in std::fs::read_dir(&corpus).expect("the corpus directory") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            targets().any(|(t, _)| *t == name),
            "corpus/{name} belongs to no target"
        );
    }
    println!("{replayed} corpus entries replayed");
}
