#include "squares.hpp"

#include <microbatch/microbatch.hpp>

std::vector<int> square_all(const std::vector<int>& values) {
    microbatch::Batcher<int, int> squarer(microbatch::Options{}.max_batch_size(4).workers(1),
                                          [](microbatch::Batch<int>& batch) {
                                              std::vector<int> out;
                                              for (int x : batch) {
                                                  out.push_back(x * x);
                                              }
                                              return out;
                                          });
    std::vector<microbatch::Handle<int>> handles;
    for (int value : values) {
        handles.push_back(squarer.submit(value));
    }
    squarer.close();
    std::vector<int> out;
    for (auto& handle : handles) {
        out.push_back(handle.get());
    }
    return out;
}
