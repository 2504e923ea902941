#![no_main]
//! See `fuzz/src/lib.rs` (`hotblock_fuzz::repl_session`) for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotblock_fuzz::repl_session(data));
