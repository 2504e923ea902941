//! `hotblock-secondary`: a passive (or, with `--serve-reads`, hot) copy of
//! a hotblock primary's blocks, promoted in place by `REPLICAOF NO ONE`.

fn main() -> std::process::ExitCode {
    hotblock_node::cmd::secondary::main()
}
