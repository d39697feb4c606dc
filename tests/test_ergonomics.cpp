// Issue 14's ergonomics of microbatch::Batcher: a move-only process_batch, and try_submit /
// submit_for forms that return the handle with the status (SubmitResult). The wrong-callback
// static_assert is a compile-failure test (tests/compile_fail/, packaging.wrong_callback).

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/merge_into.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Options;
using microbatch::SubmitResult;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

/// Stands in for a database connection: move-only, like the std::unique_ptr<Connection>.
struct Connection {
    std::string prefix;
    std::vector<std::string> query(Batch<int>& batch) const {
        std::vector<std::string> rows;
        for (int x : batch) {
            rows.push_back(prefix + std::to_string(x));
        }
        return rows;
    }
};

}  // namespace

TEST_CASE("Batcher accepts a move-only process_batch that owns its connection",
          "[batcher][ergonomics][issue14]") {
    auto connection = std::make_unique<Connection>(Connection{"row "});
    Batcher<int, std::string> batcher(Options{}.max_batch_size(3).workers(2),
                                      [connection = std::move(connection)](Batch<int>& batch) {
                                          return connection->query(batch);
                                      });
    std::vector<microbatch::Handle<std::string>> handles;
    for (int i = 0; i < 7; ++i) {
        handles.push_back(batcher.submit(i));
    }
    batcher.close();
    for (int i = 0; i < 7; ++i) {
        CHECK(handles[static_cast<std::size_t>(i)].get() == "row " + std::to_string(i));
    }
}

TEST_CASE("merge_into accepts a move-only process function", "[aggregator][ergonomics][issue14]") {
    microbatch::Aggregator<microbatch::ops::Sum<long>> total;
    auto offset = std::make_unique<long>(1);
    Batcher<long> batcher(
        Options{}.max_batch_size(4).workers(1),
        microbatch::merge_into(total, [offset = std::move(offset)](Batch<long>& batch) {
            long sum = 0;
            for (long x : batch) {
                sum += x + *offset;
            }
            return sum;
        }));
    for (long i = 0; i < 10; ++i) {
        batcher.post(i);
    }
    batcher.close();
    CHECK(total.value() == 45 + 10);
}

TEST_CASE("try_submit_handle returns the handle when accepted and the reason when rejected",
          "[batcher][ergonomics][backpressure][issue14]") {
    Gate gate;
    Batcher<int, int> batcher(Options{}.max_batch_size(2).capacity(2).workers(1),
                              [&](Batch<int>& batch) {
                                  gate.wait();
                                  std::vector<int> out;
                                  for (int x : batch) {
                                      out.push_back(x * 10);
                                  }
                                  return out;
                              });
    SubmitResult<int> first = batcher.submit_for_handle(1, 1h);
    REQUIRE(first.accepted());
    REQUIRE(first.status == SubmitStatus::accepted);
    SubmitResult<int> second = batcher.submit_for_handle(2, 1h);
    REQUIRE(second);  // the only buffer is now sealed and held by the blocked worker

    SubmitResult<int> rejected = batcher.try_submit_handle(3);
    CHECK(rejected.status == SubmitStatus::full);
    CHECK_FALSE(rejected);
    CHECK(batcher.submit_for_handle(3, 1ms).status == SubmitStatus::full);

    gate.open();
    CHECK(first.handle.get() == 10);
    CHECK(second.handle.get() == 20);
    if (auto third = batcher.submit_for_handle(3, 1h)) {
        batcher.flush();
        CHECK(third.handle.get() == 30);
    } else {
        FAIL("submit_for_handle with space and an hour to wait was rejected");
    }
    batcher.close();
    CHECK(batcher.try_submit_handle(4).status == SubmitStatus::closed);
    CHECK(batcher.submit_for_handle(4, 1h).status == SubmitStatus::closed);
}

TEST_CASE("try_submit_handle leaves a rejected item untouched", "[batcher][ergonomics][issue14]") {
    Batcher<std::unique_ptr<int>, int> batcher(Options{}.max_batch_size(1).workers(1),
                                               [](Batch<std::unique_ptr<int>>& batch) {
                                                   std::vector<int> out;
                                                   for (auto& item : batch) {
                                                       out.push_back(*item);
                                                   }
                                                   return out;
                                               });
    batcher.close();
    auto item = std::make_unique<int>(5);
    CHECK(batcher.try_submit_handle(std::move(item)).status == SubmitStatus::closed);
    REQUIRE(item != nullptr);
    CHECK(*item == 5);
}
