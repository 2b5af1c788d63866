// A benign Rust solution: reads numbers from stdin, sums their squares on as many threads as
// `available_parallelism` says (which probes the cgroup's CPU quota under /proc and /sys),
// allocates and touches 64 MiB, prints the results. Its runtime reads /proc/self/maps at start.
use std::io::Read as _;

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let numbers: Vec<i64> = input.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunk = numbers.len().div_ceil(threads).max(1);
    let sum: i64 = std::thread::scope(|scope| {
        let parts: Vec<_> = numbers
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|n| n * n).sum::<i64>()))
            .collect();
        parts.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let mut block = vec![0u8; 64 << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    let touched: usize = block.iter().map(|&b| usize::from(b)).sum();
    println!("count {} squares {sum} touched {touched}", numbers.len());
}
