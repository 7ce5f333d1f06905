//! Linux system calls shared by Herz's daemon and its benchmarks, each in one place: batched datagram
//! I/O ([`mmsg`]) and `BPF_PROG_TEST_RUN` ([`bpf`]).
#![deny(missing_docs)]

pub mod bpf;
pub mod mmsg;
