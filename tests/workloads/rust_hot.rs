//! rust_hot: a Rust workload whose hot function is known.
//!
//! Every round spends 3 times as much work in `checksum::crunch_numbers` as in
//! `checksum::tally_results`: 75 % and 25 % of the time spent in them. Round lengths vary
//! pseudo-randomly (the same sequence every run) so that no sampling period locks onto them (see
//! cpu_mix.c). A profile must show the demangled names (`rust_hot::checksum::crunch_numbers`),
//! not `_ZN...` symbols.
//!
//! Usage: rust_hot [ROUNDS]   (default 35000 rounds, about 1.5 s)
//! Built by the tests with `rustc -O -g -C force-frame-pointers=yes`.

mod checksum {
    use std::hint::black_box;

    /// Iterations per unit of work.
    const UNIT: u64 = 5_000;

    /// The hot function. Its constants differ from `tally_results`' so that LLVM cannot merge
    /// the two functions into one symbol.
    #[inline(never)]
    pub fn crunch_numbers(seed: u64, units: u64) -> u64 {
        let mut x = seed;
        for _ in 0..units * UNIT {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        x
    }

    /// A third of the hot function's work per round.
    #[inline(never)]
    pub fn tally_results(seed: u64, units: u64) -> u64 {
        let mut x = seed;
        for _ in 0..units * UNIT {
            x = black_box(x.wrapping_mul(2862933555777941757).wrapping_add(3037000493));
        }
        x
    }
}

/// xorshift64: a fixed, reproducible sequence of round lengths.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(35_000);
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut x = 1;
    for _ in 0..rounds {
        let length = 1 + next_random(&mut state) % 3;
        x = checksum::crunch_numbers(x, 3 * length);
        x = checksum::tally_results(x, length);
    }
    println!("result={x}");
}
