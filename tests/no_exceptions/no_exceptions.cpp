// Built with -fno-exceptions by packaging.no_exceptions (tests/no_exceptions/check.cmake).
//   no_exceptions works         a Batcher with handles and callbacks, and a ThreadPool, work
//   no_exceptions closed        submit on a closed Batcher: must abort with a message
//   no_exceptions options       a Batcher with max_batch_size 0: must abort with a message
//   no_exceptions result_count  process_batch returns too few results: must abort with a message
#include <microbatch/microbatch.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

std::vector<int> square(microbatch::Batch<int>& batch) {
    std::vector<int> out;
    for (int x : batch) {
        out.push_back(x * x);
    }
    return out;
}

int works() {
    microbatch::Batcher<int, int> squarer(microbatch::Options{}.max_batch_size(4).workers(2),
                                          square);
    std::vector<microbatch::Handle<int>> handles;
    for (int i = 0; i < 10; ++i) {
        handles.push_back(squarer.submit(i));
    }
    std::atomic<int> callback_sum{0};
    for (int i = 0; i < 10; ++i) {
        squarer.submit(i, [&callback_sum](microbatch::Outcome<int>&& outcome) {
            callback_sum += outcome.value();
        });
    }
    squarer.close();
    for (int i = 0; i < 10; ++i) {
        if (handles[static_cast<std::size_t>(i)].get() != i * i) {
            std::fprintf(stderr, "item %d: wrong result\n", i);
            return 1;
        }
    }
    if (callback_sum.load() != 285) {
        std::fprintf(stderr, "callbacks summed to %d, expected 285\n", callback_sum.load());
        return 1;
    }
    microbatch::ThreadPool pool(2);
    if (pool.submit([] { return 42; }).get() != 42) {
        std::fprintf(stderr, "ThreadPool::submit returned the wrong value\n");
        return 1;
    }
    std::printf("works without exceptions\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "works";
    if (std::strcmp(mode, "works") == 0) {
        return works();
    }
    if (std::strcmp(mode, "closed") == 0) {
        microbatch::Batcher<int, int> squarer(microbatch::Options{}.workers(1), square);
        squarer.close();
        squarer.submit(1);  // misuse: must terminate through MICROBATCH_THROW
    } else if (std::strcmp(mode, "options") == 0) {
        microbatch::Batcher<int, int> squarer(microbatch::Options{}.max_batch_size(0), square);
    } else if (std::strcmp(mode, "result_count") == 0) {
        microbatch::Batcher<int, int> broken(microbatch::Options{}.max_batch_size(2).workers(1),
                                             [](microbatch::Batch<int>&) {
                                                 return std::vector<int>{};  // one result short
                                             });
        microbatch::Handle<int> handle = broken.submit(1);
        broken.close();
        static_cast<void>(handle.get());
    } else {
        std::fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    std::printf("misuse '%s' did not terminate\n", mode);
    return 0;
}
