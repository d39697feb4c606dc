// Must NOT compile (packaging.wrong_process_result): process_batch returns one int per item
// for a Batcher<int, std::string>, and the error must name both accepted forms.
#include <microbatch/microbatch.hpp>

#include <string>
#include <vector>

int main() {
    microbatch::Batcher<int, std::string> batcher(
        microbatch::Options{},
        [](microbatch::Batch<int>& batch) { return std::vector<int>(batch.size(), 0); });
    return 0;
}
