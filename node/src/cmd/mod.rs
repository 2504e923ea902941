//! The two binaries' command lines and start-up, as library modules so that
//! `hotblock-bench` can run the same node and secondary as processes of its
//! own.

pub mod primary;
pub mod secondary;
