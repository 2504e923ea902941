//! `hotblock-node`: a hotblock primary as a RAM storage node that any Redis
//! client can talk to, streaming every transaction to its secondaries.

fn main() -> std::process::ExitCode {
    hotblock_node::cmd::primary::main()
}
