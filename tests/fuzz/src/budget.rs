//! The memory budget of one execution: the decoders promise that hostile bytes never make
//! them allocate past the codec's 1 MiB decode limit, so an execution that holds more than a
//! few times that live is a finding. Enforced with a capped global allocator: an allocation
//! past the budget fails, and the process aborts (a crash the fuzzer records, and a failure of
//! the corpus replay test).

use std::alloc::System;

use cap::Cap;
use kith_protocol::codec::MAX_DECODE_LEN;

/// Most bytes one execution may hold live beyond what was live before it: the input, a
/// decoded value of at most [`MAX_DECODE_LEN`], its re-encoding and a second decode.
pub const EXECUTION_BUDGET: usize = 4 * MAX_DECODE_LEN;

/// Runs `target` on `data` with at most [`EXECUTION_BUDGET`] more bytes live than before.
pub fn run_within_budget(alloc: &Cap<System>, target: fn(&[u8]), data: &[u8]) {
    let base = alloc.allocated();
    // Fails only if more than the new limit is live already, which cannot be: base is live.
    let _ = alloc.set_limit(base.saturating_add(EXECUTION_BUDGET));
    target(data);
    let _ = alloc.set_limit(usize::MAX);
}
