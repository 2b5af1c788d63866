//! Starting a command so that it is profiled (or guarded) from its first instruction.
