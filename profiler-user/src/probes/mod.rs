//! Loads the embedded eBPF object, probes kernel features and attaches programs per family.
