// Compile cost, case 1: a translation unit that uses one Batcher<int, int>.
#include <microbatch/microbatch.hpp>

int main() {
    microbatch::Batcher<int, int> batcher(
        microbatch::Options{}.max_batch_size(4),
        [](microbatch::Batch<int>& batch) { return std::vector<int>(batch.begin(), batch.end()); });
    return batcher.submit(21).get() == 21 ? 0 : 1;
}
