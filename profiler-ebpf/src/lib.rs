//! Empty on the host: this crate's content is its `profiler-ebpf` binary, built for the BPF
//! target. The library exists so that `profiler-user` can name it as a build-dependency and be
//! rebuilt when it changes.
#![no_std]
