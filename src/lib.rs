//! bsmount: Illumina BaseSpace Sequence Hub as a read-only local filesystem.
//!
//! Layers, bottom up:
//! - [`api`]: typed BaseSpace client (credentials, paging, retries, presigned URLs) behind
//!   the [`api::BaseSpaceApi`] trait;
//! - [`tree`]: the virtual directory model (BaseMount's layout, names, lazy listings);
//! - [`read`]: block cache and prefetching reads of file bytes;
//! - [`core`]: the filesystem core (async operations, typed replies, one error type),
//!   tested without a kernel;
//! - [`fs`]: the thin FUSE adapter;
//! - [`emulator`]: a BaseSpace-compatible server for tests, the demo and benchmarks;
//! - [`cli`]: the `bsmount` commands; [`dropin`]: BaseMount's command line on top of them.

pub mod api;
pub mod cli;
pub mod core;
pub mod dropin;
pub mod emulator;
pub mod escape;
pub mod fs;
pub mod mount;
pub mod read;
pub mod stats;
pub mod tree;
pub mod units;
pub mod write;
