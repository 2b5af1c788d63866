// A benign Go solution: reads numbers from stdin, sums their squares on goroutines (as many as
// runtime.NumCPU, at most 4), allocates and touches 64 MiB, prints the results. Its runtime
// reads /sys/kernel/mm/transparent_hugepage/hpage_pmd_size at start.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync"
)

func main() {
	reader := bufio.NewReader(os.Stdin)
	var numbers []int64
	for {
		var n int64
		if _, err := fmt.Fscan(reader, &n); err != nil {
			break
		}
		numbers = append(numbers, n)
	}
	workers := runtime.NumCPU()
	if workers > 4 {
		workers = 4
	}
	sums := make([]int64, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(numbers); i += workers {
				sums[w] += numbers[i] * numbers[i]
			}
		}(w)
	}
	wg.Wait()
	var sum int64
	for _, s := range sums {
		sum += s
	}
	block := make([]byte, 64<<20)
	touched := 0
	for i := 0; i < len(block); i += 4096 {
		block[i] = 1
		touched += int(block[i])
	}
	fmt.Printf("count %d squares %d touched %d\n", len(numbers), sum, touched)
}
