//! Boot what kiln built.
//!
//! - [`server`]: the boot server, the output folder and one iPXE script
//!   per bootable variant over HTTP (`kiln boot-server`, and the
//!   netboot guests of `kiln boot` and `kiln test`);
//! - [`qemu`]: a QEMU machine for a variant's disk, kernel or netboot,
//!   on KVM when `/dev/kvm` works and TCG otherwise, its user network
//!   restricted (`restrict=on`) to the forwards kiln sets up;
//! - [`test`]: `kiln test`, booting a variant headless, waiting for its
//!   `expect` line, running its script inside and giving the verdict.
//!
//! The library never prints or exits; it reads no environment.

mod error;
pub mod qemu;
pub mod server;
pub mod test;

pub use error::Error;
