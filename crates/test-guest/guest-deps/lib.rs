//! The test guest's third-party crates. This package only gives them a
//! workspace, a `Cargo.lock` and a build profile: `../build.rs` builds it and
//! links the guest against the dependencies' rlibs directly.

#![no_std]

pub use smoltcp;
