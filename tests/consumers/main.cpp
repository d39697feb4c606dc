// The one program every packaging test builds: through find_package, add_subdirectory,
// pkg-config and copied headers (see tests/CMakeLists.txt). It includes only the umbrella header,
// as a user would, and exits non-zero if the library misbehaves.
#include <microbatch/microbatch.hpp>

#include <cstdio>
#include <vector>

int main() {
    microbatch::Batcher<int, int> squarer(microbatch::Options{}.max_batch_size(4).workers(1),
                                          [](microbatch::Batch<int>& batch) {
                                              std::vector<int> out;
                                              for (int x : batch) {
                                                  out.push_back(x * x);
                                              }
                                              return out;
                                          });
    std::vector<microbatch::Handle<int>> handles;
    for (int i = 0; i < 10; ++i) {
        handles.push_back(squarer.submit(i));
    }
    squarer.close();
    for (int i = 0; i < 10; ++i) {
        const int value = handles[static_cast<std::size_t>(i)].get();
        if (value != i * i) {
            std::fprintf(stderr, "item %d: expected %d, got %d\n", i, i * i, value);
            return 1;
        }
    }
    std::printf("microbatch %d.%d.%d consumer OK\n", MICROBATCH_VERSION_MAJOR,
                MICROBATCH_VERSION_MINOR, MICROBATCH_VERSION_PATCH);
    return 0;
}
