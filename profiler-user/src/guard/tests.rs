//! Root tests of the guard layers.
