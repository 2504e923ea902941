#![no_main]
//! The RESP request parser on arbitrary bytes: never a panic, never an
//! argument past the limits, and the bytes left over are a suffix of the
//! input. The body is `hotblock_node::resp::fuzz_parse`, which
//! `node/tests/resp.rs` replays over this target's corpus.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotblock_node::resp::fuzz_parse(data));
