// A benign C++ solution: reads numbers from stdin, sums their squares on
// std::thread::hardware_concurrency() threads (at most 4; glibc counts CPUs through /sys and
// /proc), allocates and touches 64 MiB, prints the results.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <thread>
#include <vector>

int main() {
    std::vector<int64_t> numbers;
    for (int64_t n; std::cin >> n;) numbers.push_back(n);
    unsigned workers = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
    std::vector<int64_t> sums(workers, 0);
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < workers; w++)
        threads.emplace_back([&, w] {
            for (size_t i = w; i < numbers.size(); i += workers) sums[w] += numbers[i] * numbers[i];
        });
    for (auto &t : threads) t.join();
    int64_t sum = 0;
    for (auto s : sums) sum += s;
    std::vector<char> block(64 << 20, 0);
    long touched = 0;
    for (size_t i = 0; i < block.size(); i += 4096) touched += (block[i] = 1);
    std::cout << "count " << numbers.size() << " squares " << sum << " touched " << touched << "\n";
}
