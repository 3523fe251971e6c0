//! Integration tests of `kiln-debian`, one module per topic.

mod fixture_repo;
mod network;
mod resolver;
