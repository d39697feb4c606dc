// Tests of how a Batcher forms batches (issue 10): worker-aware sealing, early sealing,
// capacity counted in items, run-time setters. Time is ManualClock; a Gate holds the worker
// busy. Nothing here measures time: waits are for events, bounded by the CTest timeout.

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::DispatchReason;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

struct Formed {
    std::vector<int> items;
    DispatchReason reason;
};

// Records each batch; the first batch blocks on `hold` until it is opened.
struct Recorder {
    std::mutex mutex;
    std::vector<Formed> batches;
    Gate hold;
    std::atomic<bool> hold_first{true};
    std::atomic<int> started{0};

    void operator()(Batch<int>& batch) {
        started.fetch_add(1);
        if (hold_first.exchange(false)) {
            hold.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        batches.push_back(Formed{std::vector<int>(batch.begin(), batch.end()), batch.reason()});
    }
    std::vector<Formed> snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return batches;
    }
};

template <class Predicate>
void wait_until(Predicate predicate) {
    while (!predicate()) {
        std::this_thread::yield();
    }
}

using ManualBatcher = Batcher<int, void, ManualClock>;

ManualBatcher make(Recorder& recorder, ManualClock& clock, Options options) {
    return ManualBatcher(
        std::move(options), [&recorder](Batch<int>& batch) { recorder(batch); }, clock);
}

}  // namespace

TEST_CASE("in_flight() and pending() count dispatched, queued and open work exactly",
          "[formation][in_flight]") {
    // Sealers count batches and items dispatched, workers count them finished; in_flight() and
    // pending() are the differences (plus the open batch's items for pending()).
    ManualClock clock;
    Recorder recorder;  // holds the first batch
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(2).max_delay(1h).seal_early(false).workers(1));
    CHECK(batcher.in_flight() == 0);
    CHECK(batcher.pending() == 0);
    batcher.post(0);
    batcher.post(1);  // full: dispatched, the worker holds it
    wait_until([&] { return recorder.started.load() == 1; });
    batcher.post(2);
    batcher.post(3);  // full: dispatched, queued behind the held batch
    batcher.post(4);  // open
    CHECK(batcher.in_flight() == 2);
    CHECK(batcher.pending() == 5);
    CHECK(batcher.stats().batches_dispatched() == 2);

    recorder.hold.open();
    wait_until([&] { return batcher.in_flight() == 0; });
    CHECK(batcher.pending() == 1);  // the open batch's item
    CHECK(batcher.stats().batches_completed == 2);
    batcher.flush();
    batcher.wait_idle();
    CHECK(batcher.in_flight() == 0);
    CHECK(batcher.pending() == 0);
    CHECK(batcher.stats().items_processed == 5);
}

TEST_CASE("Batcher keeps a due batch open and growing while every worker is busy",
          "[formation][in_flight]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(8).max_delay(1ms).workers(1));
    batcher.post(0);
    clock.advance(1ms);  // sealed by its deadline; the worker now holds it
    wait_until([&] { return recorder.started.load() == 1; });

    for (int i = 1; i <= 5; ++i) {
        batcher.post(i);
    }
    clock.advance(10ms);  // far past the deadline: still open, the only worker is busy
    CHECK(batcher.stats().batches_dispatched() == 1);
    CHECK(batcher.pending() == 6);
    batcher.post(6);
    batcher.post(7);  // grows further

    recorder.hold.open();  // the worker finishes and seals the held batch at once
    wait_until([&] { return batcher.stats().batches_dispatched() == 2; });
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 2);
    CHECK(batches[0].items == std::vector<int>{0});
    CHECK(batches[0].reason == DispatchReason::deadline);
    CHECK(batches[1].items == std::vector<int>{1, 2, 3, 4, 5, 6, 7});
    CHECK(batches[1].reason == DispatchReason::worker_free);
    CHECK(batcher.stats().batches_worker_free == 1);
}

TEST_CASE("Batcher dispatches a full batch while every worker is busy", "[formation][in_flight]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(4).max_delay(1ms).workers(1));
    batcher.post(0);
    clock.advance(1ms);
    wait_until([&] { return recorder.started.load() == 1; });
    for (int i = 1; i <= 4; ++i) {
        batcher.post(i);  // the fourth fills the batch: sealed although the worker is busy
    }
    CHECK(batcher.stats().batches_full == 1);
    recorder.hold.open();
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 2);
    CHECK(batches[1].items == std::vector<int>{1, 2, 3, 4});
    CHECK(batches[1].reason == DispatchReason::full);
}

TEST_CASE("Batcher with max_delay 0 seals as soon as a worker can take the batch",
          "[formation][in_flight]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(16).max_delay(0ms).workers(1));
    batcher.post(0);  // a free worker: sealed by the producer itself, no clock advance
    wait_until([&] { return recorder.started.load() == 1; });
    for (int i = 1; i <= 3; ++i) {
        batcher.post(i);  // busy: they wait together instead of one batch each
    }
    CHECK(batcher.stats().batches_dispatched() == 1);
    recorder.hold.open();
    wait_until([&] { return batcher.stats().batches_dispatched() == 2; });
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 2);
    CHECK(batches[0].items == std::vector<int>{0});
    CHECK(batches[0].reason == DispatchReason::deadline);
    CHECK(batches[1].items == std::vector<int>{1, 2, 3});
    CHECK(batches[1].reason == DispatchReason::worker_free);
}

TEST_CASE("Batcher never lets a partial batch wait beyond max_delay while a worker is free",
          "[formation][deadline]") {
    const bool early = GENERATE(true, false);
    INFO("seal_early " << early);
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = false;
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(8).max_delay(2ms).workers(1).seal_early(early));
    batcher.post(1);
    clock.advance(2ms - 1ns);
    CHECK(batcher.stats().batches_dispatched() == 0);
    clock.advance(1ns);
    CHECK(batcher.stats().batches_deadline == 1);
    batcher.wait_idle();
}

namespace {

// An item that runs a hook when the worker destroys it, i.e. after its batch's process_batch
// returned and before the worker counts itself free.
struct HookedItem {
    int value;
    std::function<void()>* hook;
    HookedItem(int v, std::function<void()>* h = nullptr) noexcept : value(v), hook(h) {}
    HookedItem(HookedItem&& other) noexcept
        : value(other.value), hook(std::exchange(other.hook, nullptr)) {}
    HookedItem(const HookedItem&) = delete;
    HookedItem& operator=(const HookedItem&) = delete;
    HookedItem& operator=(HookedItem&&) = delete;
    ~HookedItem() {
        if (hook != nullptr) {
            (*hook)();
        }
    }
};

}  // namespace

TEST_CASE("Batcher's free worker judges a held batch on the time it becomes free",
          "[formation][in_flight]") {
    // The worker reads the clock when process_batch returns and becomes free a little later.
    // Meanwhile the timer may look at a partial batch past max_delay, see every worker busy
    // (rule 3: no time to wake at) and go idle. The free worker must then judge that batch on a
    // fresh reading: on its earlier one the batch looked young, and nobody would seal it (a
    // hang of every client waiting on its result). Due on the fresh reading, the batch is the
    // timer's to seal: the free worker wakes it.
    ManualClock clock;
    Gate hold;
    std::mutex mutex;
    std::vector<std::pair<std::vector<int>, DispatchReason>> batches;
    std::atomic<int> started{0};
    Batcher<HookedItem, void, ManualClock> batcher(
        Options{}.max_batch_size(8).max_delay(1ms).workers(1),
        [&](Batch<HookedItem>& batch) {
            if (started.fetch_add(1) == 0) {
                hold.wait();
            }
            std::vector<int> values;
            for (const HookedItem& item : batch) {
                values.push_back(item.value);
            }
            std::lock_guard<std::mutex> lock(mutex);
            batches.emplace_back(std::move(values), batch.reason());
        },
        clock);
    // Destroying item 0 (after its batch ran, before its worker is free): time passes and the
    // timer looks while the worker still counts as busy.
    std::function<void()> advance_while_busy = [&clock] { clock.advance(5ms); };
    batcher.post(HookedItem(0, &advance_while_busy));
    clock.advance(1ms);  // sealed by its deadline; the only worker holds it
    wait_until([&] { return started.load() == 1; });
    batcher.post(HookedItem(1));  // a partial batch opened at 1 ms, held: the worker is busy
    batcher.post(HookedItem(2));
    hold.open();
    // The worker finishes at 1 ms by its clock reading, the hook moves time to 6 ms, and the
    // free worker must see the held batch (4 ms past its deadline) due and wake the timer.
    wait_until([&] { return batcher.stats().batches_dispatched() == 2; });
    batcher.wait_idle();
    std::lock_guard<std::mutex> lock(mutex);
    REQUIRE(batches.size() == 2);
    CHECK(batches[0].first == std::vector<int>{0});
    CHECK(batches[0].second == DispatchReason::deadline);
    CHECK(batches[1].first == std::vector<int>{1, 2});
    CHECK(batches[1].second == DispatchReason::deadline);  // sealed by the timer
}

TEST_CASE("Batcher seals early once arrivals stop for several mean gaps", "[formation][early]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = false;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(4).max_delay(10ms).workers(1));
    // Ten full batches, one per ms: an arrival rate of 4 items/ms, so the quiet window is four
    // mean gaps = 1 ms. (Every batch finishes before the clock moves, so ManualClock measures
    // it as taking no time: alpha is 0 and the target-size rule stays off.)
    int next = 0;
    for (int b = 0; b < 10; ++b) {
        for (int i = 0; i < 4; ++i) {
            batcher.post(next++);
        }
        batcher.wait_idle();  // finished before time moves, so it is measured as taking 0
        clock.advance(1ms);
    }
    batcher.wait_idle();
    CHECK(batcher.stats().batches_full == 10);

    batcher.post(100);     // one item: the timer knows it arrived when the batch opened
    clock.advance(900us);  // quiet for 0.9 ms: still waiting
    CHECK(batcher.stats().batches_early == 0);
    clock.advance(100us);  // quiet for 1 ms: nothing is coming, seal now (not at 10 ms)
    CHECK(batcher.stats().batches_early == 1);
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 11);
    CHECK(batches.back().items == std::vector<int>{100});
    CHECK(batches.back().reason == DispatchReason::early);
}

TEST_CASE("Batcher without seal_early waits for max_delay after arrivals stop",
          "[formation][early]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = false;
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(4).max_delay(10ms).workers(1).seal_early(false));
    for (int b = 0; b < 10; ++b) {
        for (int i = 0; i < 4; ++i) {
            batcher.post(i);
        }
        clock.advance(1ms);
    }
    batcher.wait_idle();
    batcher.post(100);
    clock.advance(9ms);
    CHECK(batcher.stats().batches_dispatched() == 10);
    clock.advance(1ms);
    CHECK(batcher.stats().batches_deadline == 1);
    CHECK(batcher.stats().batches_early == 0);
}

TEST_CASE("Batcher counts capacity in items: small batches do not block producers early",
          "[formation][backpressure]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher =
        make(recorder, clock, Options{}.max_batch_size(8).capacity(16).max_delay(1ms).workers(1));
    batcher.post(0);
    clock.advance(1ms);  // a batch of 1 item is running (and held)
    wait_until([&] { return recorder.started.load() == 1; });
    // Counted in buffers (before issue 10), the batch of 1 took 8 of the 16 slots and producers
    // were refused after 8 more. Counted in items, 15 more are accepted.
    int accepted = 1;
    while (batcher.try_submit(accepted) == SubmitStatus::accepted) {
        ++accepted;
    }
    CHECK(accepted == 16);
    CHECK(batcher.pending() == 16);
    CHECK(batcher.try_submit(99) == SubmitStatus::full);
    recorder.hold.open();
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.items_processed == 16);
    CHECK(stats.items_rejected_full == 2);
}

TEST_CASE("Batcher setters take effect at the next batch", "[formation][setters]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = false;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(4).max_delay(10ms).workers(1));
    batcher.post(1);
    batcher.set_max_batch_size(2);  // the open batch keeps its bound of 4
    CHECK(batcher.max_batch_size() == 2);
    batcher.post(2);
    batcher.post(3);
    CHECK(batcher.stats().batches_full == 0);
    batcher.post(4);
    CHECK(batcher.stats().batches_full == 1);
    batcher.post(5);
    batcher.post(6);  // the next batch is full at 2
    CHECK(batcher.stats().batches_full == 2);
    batcher.wait_idle();  // the worker is free again: the time bound alone decides below

    batcher.post(7);  // opened at t = 0 with max_delay 10 ms
    batcher.set_max_delay(3ms);
    CHECK(batcher.max_delay() == 3ms);
    clock.advance(3ms);  // due under the new bound
    CHECK(batcher.stats().batches_deadline == 1);
    batcher.wait_idle();

    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 3);
    CHECK(batches[0].items == std::vector<int>{1, 2, 3, 4});
    CHECK(batches[1].items == std::vector<int>{5, 6});
    CHECK(batches[2].items == std::vector<int>{7});

    CHECK_THROWS_AS(batcher.set_max_batch_size(0), std::invalid_argument);
    CHECK_THROWS_AS(batcher.set_max_batch_size(5), std::invalid_argument);
    CHECK_THROWS_AS(batcher.set_max_delay(-1ms), std::invalid_argument);
    try {
        batcher.set_max_batch_size(5);
    } catch (const std::invalid_argument& error) {
        CHECK(std::string(error.what()).find("set_max_batch_size") != std::string::npos);
        CHECK(std::string(error.what()).find("got 5") != std::string::npos);
    }
}

TEST_CASE("Batcher set_max_in_flight releases a held batch at once", "[formation][setters]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(8).max_delay(1ms).workers(2).max_in_flight(1));
    CHECK(batcher.max_in_flight() == 1);
    batcher.post(0);
    clock.advance(1ms);
    wait_until([&] { return recorder.started.load() == 1; });
    batcher.post(1);
    clock.advance(1ms);  // due, but the limit of 1 is reached: held
    CHECK(batcher.stats().batches_dispatched() == 1);
    batcher.set_max_in_flight(2);  // the second worker may take it now
    CHECK(batcher.stats().batches_dispatched() == 2);
    CHECK(batcher.stats().batches_worker_free == 1);
    wait_until([&] { return recorder.started.load() == 2; });  // ran beside the held one
    recorder.hold.open();
    batcher.wait_idle();
}

TEST_CASE("Batcher with an unlimited in-flight limit seals by time whatever the workers do",
          "[formation][in_flight]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}
                            .max_batch_size(8)
                            .max_delay(1ms)
                            .workers(1)
                            .max_in_flight(Options::unlimited_in_flight)
                            .seal_early(false));
    batcher.post(0);
    clock.advance(1ms);
    wait_until([&] { return recorder.started.load() == 1; });
    batcher.post(1);
    clock.advance(1ms);  // the size/time-only rule: sealed although the worker is busy
    CHECK(batcher.stats().batches_deadline == 2);
    recorder.hold.open();
    batcher.wait_idle();
}

TEST_CASE("Batcher stats report the wait for a worker and the item latency", "[formation][stats]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = false;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(2).max_delay(1ms).workers(1));
    batcher.post(1);
    batcher.post(2);
    batcher.wait_idle();
    const auto stats = batcher.stats();
    CHECK(stats.dispatch_wait.count == 1);
    CHECK(stats.item_latency.count == 1);
    CHECK(stats.item_latency.percentile(0.99) == stats.item_latency.max);
}
