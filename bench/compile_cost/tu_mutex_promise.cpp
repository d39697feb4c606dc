// Compile cost, the baseline: the benchmarks' std-only mutex + std::promise batcher, used as
// tu_batcher.cpp uses Batcher<int, int>.
#include "mutex_batcher.hpp"

int main() {
    microbatch_bench::MutexBatcherOptions options;
    options.max_batch_size = 4;
    microbatch_bench::MutexPromiseBatcher<int, int> batcher(options, [](std::vector<int>& batch) {
        return std::vector<int>(batch.begin(), batch.end());
    });
    const int result = batcher.submit_with_promise(21).get();
    batcher.close();
    return result == 21 ? 0 : 1;
}
