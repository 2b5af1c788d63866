//! rust_hot: a Rust workload whose hot function is known.
//!
//! Every round spends 3 units of work in `checksum::crunch_numbers` and 1 in
//! `checksum::tally_results`: 75 % and 25 % of the time spent in them. A profile must show the
//! demangled names (`rust_hot::checksum::crunch_numbers`), not `_ZN...` symbols.
//!
//! Usage: rust_hot [ROUNDS]   (default 35000 rounds, about 1.5 s)
//! Built by the tests with `rustc -O -g -C force-frame-pointers=yes`.

mod checksum {
    use std::hint::black_box;

    const UNIT: u64 = 10_000;

    /// The hot function: three units per round. The constants differ from `tally_results` so
    /// that LLVM cannot merge the two functions into one symbol.
    #[inline(never)]
    pub fn crunch_numbers(seed: u64) -> u64 {
        let mut x = seed;
        for _ in 0..3 * UNIT {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        x
    }

    /// One unit per round.
    #[inline(never)]
    pub fn tally_results(seed: u64) -> u64 {
        let mut x = seed;
        for _ in 0..UNIT {
            x = black_box(x.wrapping_mul(2862933555777941757).wrapping_add(3037000493));
        }
        x
    }
}

fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(35_000);
    let mut x = 1;
    for _ in 0..rounds {
        x = checksum::crunch_numbers(x);
        x = checksum::tally_results(x);
    }
    println!("result={x}");
}
