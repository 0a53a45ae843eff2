//! bpc-ovz: a BackupPC transfer proxy for OpenVZ containers.
#![allow(dead_code)]

mod relay;
mod ssh;

fn main() {}
