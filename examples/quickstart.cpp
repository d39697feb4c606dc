// quickstart: the classic microbatching example. The numbers 1..10 arrive one at a time, are
// grouped into batches of (at most) 3, each batch is doubled by one call of process_batch on a
// worker thread, and the results are printed in the original order:
//   [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
//
//   quickstart          run it
//   quickstart --help   print the usage
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <microbatch/microbatch.hpp>

int main(int argc, char** argv) {
    using namespace std::chrono_literals;

    if (argc > 1) {
        if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
            std::printf(
                "usage: quickstart\n"
                "Batches the numbers 1..10 in batches of at most 3, doubles each batch on a\n"
                "worker thread and prints the results in order; the batch counts go to stderr.\n");
            return 0;
        }
        std::fprintf(stderr, "quickstart: unknown argument '%s' (try --help)\n", argv[1]);
        return 2;
    }

    // One result per item: process_batch returns a vector as long as the batch.
    microbatch::Batcher<int, int> doubler(
        microbatch::Options{}.max_batch_size(3).max_delay(5ms).workers(2),
        [](microbatch::Batch<int>& batch) {
            std::vector<int> results;
            results.reserve(batch.size());
            for (int item : batch) {
                results.push_back(item * 2);
            }
            return results;
        });

    // Submit items one at a time. Each item's result lands at its submission position in an
    // ordered collector, written by whichever worker ran its batch (batches may finish out of
    // order; the collector puts results back in order). Callbacks allocate nothing per item.
    microbatch::OrderedCollector<int> results;
    for (int item = 1; item <= 10; ++item) {
        const std::size_t position = results.reserve_index();
        doubler.submit(item, [&results, position](microbatch::Outcome<int>&& outcome) {
            results.set(position, std::move(outcome).value());
        });
    }
    doubler.close();  // dispatches the last partial batch (10) and waits: nothing is lost

    const std::vector<int> in_order = results.collect();
    std::printf("[");
    for (std::size_t i = 0; i < in_order.size(); ++i) {
        std::printf(i == 0 ? "%d" : ", %d", in_order[i]);
    }
    std::printf("]\n");

    const microbatch::Stats stats = doubler.stats();
    std::fprintf(stderr, "%llu items in %llu batches (%llu full, %llu at close)\n",
                 static_cast<unsigned long long>(stats.items_processed),
                 static_cast<unsigned long long>(stats.batches_completed),
                 static_cast<unsigned long long>(stats.batches_full),
                 static_cast<unsigned long long>(stats.batches_close));
    return 0;
}
