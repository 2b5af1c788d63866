//! The only code that reads BPF maps, ring buffers and perf buffers; yields typed data.
