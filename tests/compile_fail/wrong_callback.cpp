// Must NOT compile (packaging.wrong_callback): the callback takes an int instead of
// microbatch::Outcome<int>&&, and the error must name the required signature.
#include <microbatch/microbatch.hpp>

#include <vector>

int main() {
    microbatch::Batcher<int, int> batcher(microbatch::Options{}, [](microbatch::Batch<int>& batch) {
        return std::vector<int>(batch.size(), 0);
    });
    batcher.submit(1, [](int) {});
    return 0;
}
