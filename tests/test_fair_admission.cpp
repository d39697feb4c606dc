// Fair admission (issue 11): producers blocked on a full batcher are admitted in the order they
// blocked. Deterministic: each producer is started only once the previous one is queued
// (Batcher::waiting_producers), and batches of one item make room for one producer at a time.

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Options;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

template <class Predicate>
void wait_until(Predicate predicate) {
    while (!predicate()) {
        std::this_thread::yield();
    }
}

struct Order {
    std::mutex mutex;
    std::vector<int> items;
    Gate hold;
    std::atomic<int> started{0};
    void operator()(Batch<int>& batch) {
        if (started.fetch_add(1) == 0) {
            hold.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        items.insert(items.end(), batch.begin(), batch.end());
    }
};

}  // namespace

TEST_CASE("Producers blocked on a full batcher are admitted in arrival order", "[fair_admission]") {
    const bool timed = GENERATE(false, true);
    INFO("submit_for: " << timed);
    constexpr int producers = 8;
    Order order;
    Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                         [&order](Batch<int>& batch) { order(batch); });
    batcher.post(0);  // runs and holds the only worker; the one item of capacity is taken
    wait_until([&] { return order.started.load() == 1; });

    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int p = 1; p <= producers; ++p) {
        threads.emplace_back([&batcher, &refused, p, timed] {
            if (timed) {
                if (batcher.submit_for(p, 1h) != SubmitStatus::accepted) {
                    refused.fetch_add(1);
                }
            } else {
                batcher.post(p);
            }
        });
        wait_until([&] { return batcher.waiting_producers() == static_cast<std::size_t>(p); });
    }
    order.hold.open();  // each finished item makes room for exactly the next producer
    for (auto& thread : threads) {
        thread.join();
    }
    batcher.close();
    std::vector<int> expected;
    for (int p = 0; p <= producers; ++p) {
        expected.push_back(p);
    }
    CHECK(order.items == expected);
    CHECK(refused.load() == 0);
    CHECK(batcher.waiting_producers() == 0);
}

TEST_CASE("A producer that gives up leaves the queue without blocking the others",
          "[fair_admission]") {
    Order order;
    Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                         [&order](Batch<int>& batch) { order(batch); });
    batcher.post(0);
    wait_until([&] { return order.started.load() == 1; });
    std::thread first([&] { batcher.post(1); });
    wait_until([&] { return batcher.waiting_producers() == 1; });
    // Queued behind the first; times out (full) and leaves.
    CHECK(batcher.submit_for(2, 1ms) == SubmitStatus::full);
    CHECK(batcher.waiting_producers() == 1);
    std::thread third([&] { batcher.post(3); });
    wait_until([&] { return batcher.waiting_producers() == 2; });
    order.hold.open();
    first.join();
    third.join();
    batcher.close();
    CHECK(order.items == std::vector<int>{0, 1, 3});
}

TEST_CASE("Closing wakes every queued producer with ClosedError", "[fair_admission]") {
    Order order;
    Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                         [&order](Batch<int>& batch) { order(batch); });
    batcher.post(0);
    wait_until([&] { return order.started.load() == 1; });
    std::atomic<int> closed{0};
    std::vector<std::thread> threads;
    for (int p = 1; p <= 4; ++p) {
        threads.emplace_back([&batcher, &closed, p] {
            try {
                batcher.post(p);
            } catch (const microbatch::ClosedError&) {
                closed.fetch_add(1);
            }
        });
        wait_until([&] { return batcher.waiting_producers() == static_cast<std::size_t>(p); });
    }
    std::thread closer([&] { batcher.close(); });
    wait_until([&] { return batcher.is_closed(); });
    order.hold.open();
    for (auto& thread : threads) {
        thread.join();
    }
    closer.join();
    // Each blocked producer either got in before the close or was refused; none is lost.
    CHECK(closed.load() + static_cast<int>(order.items.size()) == 5);
    CHECK(batcher.waiting_producers() == 0);
}
