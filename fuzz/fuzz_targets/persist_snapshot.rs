#![no_main]
//! See `fuzz/src/lib.rs` (`hotblock_fuzz::persist_snapshot`) for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotblock_fuzz::persist_snapshot(data));
