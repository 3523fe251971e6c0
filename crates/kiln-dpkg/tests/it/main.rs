//! Integration tests of `kiln-dpkg`, one module per topic.

mod archive;
mod malicious;
mod network;
