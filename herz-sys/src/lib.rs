//! Linux system calls shared by Herz's daemon and its benchmarks, each in one place: batched datagram
//! I/O ([`mmsg`]), `BPF_PROG_TEST_RUN` ([`bpf`]) and the interfaces' addresses ([`ifaddrs`]).
#![deny(missing_docs)]

pub mod bpf;
pub mod ifaddrs;
pub mod mmsg;
