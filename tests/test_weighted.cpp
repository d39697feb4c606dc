// Tests of weighted batches (issue 12 item 1): a cost function on items (cost_by), the bound on
// a batch's total cost (max_batch_cost), the bound on pending cost (max_pending_cost) with
// block / try / timed backpressure, CostLimitError, and the cost stats. Exact outcomes: batch
// contents, every item exactly once, statuses. No test times anything: ManualClock never moves
// unless told, so only the cost bound (or flush/close) seals batches here.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/detail/batcher_cost.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::BulkResult;
using microbatch::ClosedError;
using microbatch::cost_by;
using microbatch::CostLimitError;
using microbatch::DispatchReason;
using microbatch::Handle;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

using Batches = std::vector<std::vector<std::string>>;

// Records each batch's items and dispatch reason; every batch waits on `gate` when `hold` is set.
struct Recorder {
    std::mutex mutex;
    Batches batches;
    std::vector<DispatchReason> reasons;
    Gate gate;
    std::atomic<bool> hold{false};
    std::atomic<int> started{0};

    void operator()(Batch<std::string>& batch) {
        started.fetch_add(1);
        if (hold.load()) {
            gate.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        batches.emplace_back(batch.begin(), batch.end());
        reasons.push_back(batch.reason());
    }
    Batches snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return batches;
    }
    std::vector<DispatchReason> snapshot_reasons() {
        std::lock_guard<std::mutex> lock(mutex);
        return reasons;
    }
};

auto by_length() {
    return cost_by([](const std::string& s) { return s.size(); });
}

// A weighed batcher whose time bound never fires (ManualClock does not move).
Options weighed(std::size_t max_batch_cost, std::size_t max_pending_cost = 0) {
    return Options{}
        .max_batch_size(100)
        .max_delay(1h)
        .max_batch_cost(max_batch_cost)
        .max_pending_cost(max_pending_cost)
        .seal_early(false);
}

template <class Predicate>
void wait_until(Predicate predicate) {
    while (!predicate()) {
        std::this_thread::yield();
    }
}

}  // namespace

TEST_CASE("weighted: the batch cost rule is a pure function") {
    using microbatch::detail::batch_cost_full;
    using microbatch::detail::item_fits_batch;
    CHECK(item_fits_batch(0, 0, 5, 0));          // no bound
    CHECK(item_fits_batch(900, 3, 500, 0));      // no bound
    CHECK(item_fits_batch(6, 2, 4, 10));         // exactly the bound
    CHECK_FALSE(item_fits_batch(6, 2, 5, 10));   // one over
    CHECK(item_fits_batch(0, 0, 50, 10));        // an empty batch takes an oversized item
    CHECK_FALSE(item_fits_batch(0, 3, 50, 10));  // zero-cost items first: sealed before it
    CHECK(item_fits_batch(10, 4, 0, 10));        // a zero-cost item fits a full-cost batch
    CHECK(batch_cost_full(10, 10));
    CHECK(batch_cost_full(50, 10));
    CHECK_FALSE(batch_cost_full(9, 10));
    CHECK_FALSE(batch_cost_full(1000, 0));
}

TEST_CASE("weighted: a batch is sealed before an item that would exceed max_batch_cost") {
    ManualClock clock;
    Recorder recorder;
    {
        Batcher<std::string, void, ManualClock> batcher(weighed(10), by_length(),
                                                        std::ref(recorder), clock);
        batcher.post(std::string("aaaa"));  // 4
        batcher.post(std::string("bbbb"));  // 8
        batcher.post(std::string("ccc"));   // 11 > 10: seals {aaaa, bbbb}, opens the next batch
        wait_until([&] { return recorder.snapshot().size() == 1; });
        CHECK(recorder.snapshot()[0] == std::vector<std::string>{"aaaa", "bbbb"});
        batcher.post(std::string("dd"));  // 5
        batcher.flush();
        // Not "until the recorder saw 2 batches": process_batch returns before the worker
        // records the batch's stats. wait_idle() returns once the batch has finished.
        batcher.wait_idle();
        const auto stats = batcher.stats();
        CHECK(stats.batches_full == 1);
        CHECK(stats.batches_flush == 1);
        CHECK(stats.item_cost_total == 13);
        CHECK(stats.batch_item_cost_max == 8);
        CHECK(stats.items_oversized == 0);
        CHECK(stats.batch_item_cost_mean() == 6.5);
    }
    CHECK(recorder.snapshot() == Batches{{"aaaa", "bbbb"}, {"ccc", "dd"}});
}

TEST_CASE("weighted: a batch is sealed as soon as its cost reaches max_batch_cost") {
    ManualClock clock;
    Recorder recorder;
    Batcher<std::string, void, ManualClock> batcher(weighed(10), by_length(), std::ref(recorder),
                                                    clock);
    Handle<void> first = batcher.submit(std::string("aaaaaa"));  // 6
    Handle<void> second = batcher.submit(std::string("bbbb"));   // 10: full, sealed at once
    second.get();  // completes without flush, close or time: the cost bound sealed the batch
    first.get();
    CHECK(recorder.snapshot() == Batches{{"aaaaaa", "bbbb"}});
    CHECK(recorder.snapshot_reasons() == std::vector<DispatchReason>{DispatchReason::full});
    CHECK(batcher.stats().batch_item_cost_max == 10);
}

TEST_CASE("weighted: an item heavier than max_batch_cost gets a batch of its own") {
    ManualClock clock;
    Recorder recorder;
    {
        Batcher<std::string, void, ManualClock> batcher(weighed(10), by_length(),
                                                        std::ref(recorder), clock);
        batcher.post(std::string("ab"));
        batcher.post(std::string(""));       // zero cost: joins
        batcher.post(std::string(25, 'x'));  // oversized: seals {ab, ""}, alone, sealed at once
        Handle<void> after = batcher.submit(std::string("c"));
        wait_until([&] { return recorder.snapshot().size() == 2; });
        batcher.close();
        after.get();
        const auto stats = batcher.stats();
        CHECK(stats.items_oversized == 1);
        CHECK(stats.batch_item_cost_max == 25);
        CHECK(stats.item_cost_total == 28);
        CHECK(stats.items_processed == 4);
    }
    CHECK(recorder.snapshot() == Batches{{"ab", ""}, {std::string(25, 'x')}, {"c"}});
}

TEST_CASE("weighted: zero-cost items never fill a batch by cost; max_batch_size still counts") {
    ManualClock clock;
    Recorder recorder;
    {
        auto options = weighed(10);
        options.max_batch_size(3);
        Batcher<std::string, void, ManualClock> batcher(options, by_length(), std::ref(recorder),
                                                        clock);
        for (int i = 0; i < 7; ++i) {
            batcher.post(std::string());
        }
    }
    CHECK(recorder.snapshot() == Batches{{"", "", ""}, {"", "", ""}, {""}});
}

TEST_CASE("weighted: a cost function without bounds only counts") {
    ManualClock clock;
    Recorder recorder;
    Batcher<std::string, void, ManualClock> batcher(
        Options{}.max_batch_size(2).max_delay(1h).seal_early(false), by_length(),
        std::ref(recorder), clock);
    batcher.post(std::string(100, 'a'));
    batcher.post(std::string(200, 'b'));  // full by count
    batcher.post(std::string(7, 'c'));
    CHECK(batcher.pending_cost() >= 7);
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.item_cost_total == 307);
    CHECK(stats.batch_item_cost_max == 300);
    CHECK(batcher.pending_cost() == 0);
    CHECK(recorder.snapshot().size() == 2);
}

TEST_CASE("weighted: items of another type are weighed as the T they become") {
    ManualClock clock;
    Recorder recorder;
    {
        Batcher<std::string, void, ManualClock> batcher(weighed(4), by_length(), std::ref(recorder),
                                                        clock);
        batcher.post("abc");  // const char*: weighed through a temporary std::string
        batcher.post("de");   // 5 > 4: seals {abc}
        const char* literal = "f";
        CHECK(batcher.try_submit(literal) == SubmitStatus::accepted);
    }
    CHECK(recorder.snapshot() == Batches{{"abc"}, {"de", "f"}});
}

TEST_CASE("weighted: an argument that could only be weighed by moving it is refused untouched") {
    struct Base {
        virtual ~Base() = default;
        std::size_t size = 3;
    };
    struct Derived : Base {};
    std::atomic<int> processed{0};
    Batcher<std::unique_ptr<Base>> batcher(
        weighed(10), cost_by([](const std::unique_ptr<Base>& p) { return p->size; }),
        [&](Batch<std::unique_ptr<Base>>& batch) { processed += static_cast<int>(batch.size()); });
    auto derived = std::make_unique<Derived>();
    CHECK_THROWS_AS(batcher.post(std::move(derived)), std::invalid_argument);
    CHECK(derived != nullptr);                                // not moved from
    batcher.post(std::unique_ptr<Base>(std::move(derived)));  // as T: fine
    batcher.close();
    CHECK(processed == 1);
}

TEST_CASE("weighted: max_pending_cost makes try_submit report full, and frees with the batch") {
    Recorder recorder;
    recorder.hold = true;
    auto options = weighed(0, 10);
    options.max_batch_size(2).max_delay(0ns);
    Batcher<std::string> batcher(options, by_length(), std::ref(recorder));
    CHECK(batcher.try_submit(std::string("aaaaaa")) == SubmitStatus::accepted);  // 6
    CHECK(batcher.try_submit(std::string("bbbb")) == SubmitStatus::accepted);    // 10
    CHECK(batcher.pending_cost() == 10);
    std::string rejected = "c";
    CHECK(batcher.try_submit(std::move(rejected)) == SubmitStatus::full);
    CHECK(rejected == "c");                                              // untouched
    CHECK(batcher.try_submit(std::string()) == SubmitStatus::accepted);  // costs nothing
    CHECK(batcher.submit_for(std::string("d"), 1ms) == SubmitStatus::full);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_full == 2);
    recorder.gate.open();
    batcher.wait_idle();
    CHECK(batcher.pending_cost() == 0);
    CHECK(batcher.try_submit(std::string("cccccccccc")) == SubmitStatus::accepted);
    batcher.close();
    CHECK(batcher.stats().items_processed == 4);
}

TEST_CASE("weighted: a blocked submit waits for pending cost and goes on when a batch ends") {
    Recorder recorder;
    recorder.hold = true;
    auto options = weighed(0, 10);
    options.max_batch_size(1).max_delay(0ns);
    Batcher<std::string> batcher(options, by_length(), std::ref(recorder));
    batcher.post(std::string(8, 'a'));
    wait_until([&] { return recorder.started.load() == 1; });
    std::atomic<bool> returned{false};
    std::thread producer([&] {
        batcher.post(std::string(5, 'b'));  // 8 + 5 > 10: waits
        returned = true;
    });
    wait_until([&] { return batcher.waiting_producers() == 1; });
    CHECK_FALSE(returned.load());
    recorder.gate.open();  // the batch ends, its cost leaves: the producer is admitted
    producer.join();
    CHECK(returned.load());
    batcher.close();
    CHECK(recorder.snapshot() == Batches{{std::string(8, 'a')}, {std::string(5, 'b')}});
    CHECK(batcher.stats().items_rejected() == 0);
}

TEST_CASE("weighted: open batches are sealed while producers wait for pending cost") {
    // No time bound (ManualClock never moves): without this the open batch would hold the
    // pending cost forever and the blocked post below would never return.
    ManualClock clock;
    Recorder recorder;
    {
        Batcher<std::string, void, ManualClock> batcher(weighed(0, 10), by_length(),
                                                        std::ref(recorder), clock);
        batcher.post(std::string(6, 'a'));
        CHECK(batcher.try_submit(std::string(6, 'b')) == SubmitStatus::full);
        // The refusal sealed the open batch (reason full), so a polling producer gets room.
        wait_until([&] { return recorder.snapshot().size() == 1; });
        CHECK(batcher.stats().batches_full == 1);
        batcher.post(std::string(6, 'c'));
        batcher.post(std::string(6, 'd'));  // blocks: seals {c}, which runs and frees its cost
        batcher.close();
    }
    CHECK(recorder.snapshot() ==
          Batches{{std::string(6, 'a')}, {std::string(6, 'c')}, {std::string(6, 'd')}});
    CHECK(recorder.snapshot_reasons() == std::vector<DispatchReason>{DispatchReason::full,
                                                                     DispatchReason::full,
                                                                     DispatchReason::close});
}

TEST_CASE("weighted: while every worker is busy the open batch grows; a free worker seals it") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold = true;
    auto options = weighed(0, 10);
    options.workers(1);
    Batcher<std::string, void, ManualClock> batcher(options, by_length(), std::ref(recorder),
                                                    clock);
    batcher.post(std::string(6, 'a'));
    batcher.flush();  // {a} runs and holds the only worker
    wait_until([&] { return recorder.started.load() == 1; });
    batcher.post(std::string(3, 'b'));                                 // the open batch: 9 pending
    std::thread producer([&] { batcher.post(std::string(5, 'c')); });  // 14 > 10: waits
    wait_until([&] { return batcher.waiting_producers() == 1; });
    // Sealing {b} now would only queue it behind {a}: rule 3 keeps it open (rule 4c waits for
    // a free worker).
    CHECK(batcher.stats().batches_dispatched() == 1);
    CHECK(batcher.pending_cost() == 9);
    recorder.gate.open();  // {a} ends: its cost leaves, the producer is admitted
    producer.join();
    batcher.close();
    Batches batches = recorder.snapshot();
    std::vector<std::string> items;
    for (const auto& batch : batches) {
        items.insert(items.end(), batch.begin(), batch.end());
    }
    CHECK(items ==
          std::vector<std::string>{std::string(6, 'a'), std::string(3, 'b'), std::string(5, 'c')});
    CHECK(batcher.pending_cost() == 0);
}

TEST_CASE("weighted: with an inline executor a blocked producer runs the open batch itself") {
    ManualClock clock;
    Recorder recorder;
    {
        auto options = weighed(0, 10);
        options.executor([](microbatch::Task task) { task(); });
        Batcher<std::string, void, ManualClock> batcher(options, by_length(), std::ref(recorder),
                                                        clock);
        for (int i = 0; i < 5; ++i) {
            batcher.post(std::string(4, static_cast<char>('a' + i)));
        }
    }
    CHECK(recorder.snapshot() == Batches{{"aaaa", "bbbb"}, {"cccc", "dddd"}, {"eeee"}});
}

TEST_CASE("weighted: producers waiting for pending cost are admitted in arrival order") {
    Recorder recorder;
    recorder.hold = true;
    auto options = weighed(0, 100);
    options.max_batch_size(1).max_delay(0ns);
    Batcher<std::string> batcher(options, by_length(), std::ref(recorder));
    batcher.post(std::string(90, 'a'));
    wait_until([&] { return recorder.started.load() == 1; });
    std::thread heavy([&] { batcher.post(std::string(50, 'h')); });
    wait_until([&] { return batcher.waiting_producers() == 1; });
    // 90 + 5 fits the bound, but the heavy item waits first: a light one may not overtake it.
    CHECK(batcher.try_submit(std::string(5, 'l')) == SubmitStatus::full);
    std::thread light([&] { batcher.post(std::string(5, 'l')); });
    wait_until([&] { return batcher.waiting_producers() == 2; });
    recorder.gate.open();
    heavy.join();
    light.join();
    batcher.close();
    // Both were admitted (the order of their claims, after their reservations, is free).
    Batches batches = recorder.snapshot();
    REQUIRE(batches.size() == 3);
    std::sort(batches.begin() + 1, batches.end());
    CHECK(batches[1] == std::vector<std::string>{std::string(50, 'h')});
    CHECK(batches[2] == std::vector<std::string>{std::string(5, 'l')});
}

TEST_CASE("weighted: an item costing more than max_pending_cost throws CostLimitError") {
    Recorder recorder;
    Batcher<std::string> batcher(weighed(0, 10), by_length(), std::ref(recorder));
    std::string heavy(11, 'x');
    CHECK_THROWS_AS(batcher.try_submit(std::move(heavy)), CostLimitError);
    CHECK(heavy.size() == 11);  // untouched
    CHECK_THROWS_AS(batcher.post(std::move(heavy)), CostLimitError);
    CHECK(heavy.size() == 11);
    try {
        (void)batcher.submit(heavy);
        FAIL("no exception");
    } catch (const CostLimitError& error) {
        CHECK(std::string(error.what()).find("item cost 11 exceeds max_pending_cost 10") !=
              std::string::npos);
    }
    std::vector<std::string> run{"a", std::string(11, 'y'), "b"};
    CHECK_THROWS_AS(batcher.post_n(run.begin(), run.size()), CostLimitError);  // "a" accepted
    CHECK(batcher.stats().items_rejected_error == 4);  // refused before taking a slot
    batcher.close();
    CHECK(recorder.snapshot() == Batches{{"a"}});
    CHECK(batcher.pending_cost() == 0);
}

TEST_CASE("weighted: admission control judges an item with a deadline before weighing it") {
    // The process function advances the clock 1 ms per batch, which teaches the cost fit
    // alpha = 1 ms; an item due in 1 us behind a pending one is then infeasible.
    ManualClock clock;
    std::atomic<int> weighed{0};
    Batcher<std::string, void, ManualClock> batcher(
        Options{}
            .max_batch_size(16)
            .max_delay(1h)
            .max_pending_cost(10)
            .seal_early(false)
            .deadline_sealing(false)
            .admission_control(true),
        cost_by([&weighed](const std::string& s) {
            weighed.fetch_add(1);
            return s.size();
        }),
        [&clock](Batch<std::string>&) { clock.advance(1ms); }, clock);
    for (int round = 0; round < 4; ++round) {
        batcher.post(std::string("a"));
        batcher.flush();
        batcher.wait_idle();
    }
    batcher.post(std::string("b"));  // pending: the next item waits behind it
    const int before = weighed.load();
    std::string heavy(11, 'x');  // above max_pending_cost as well
    CHECK(batcher.try_submit(1us, std::move(heavy)) == SubmitStatus::infeasible);
    CHECK(heavy.size() == 11);        // untouched
    CHECK(weighed.load() == before);  // refused before the cost function ran
    CHECK_THROWS_AS(batcher.try_submit(std::move(heavy)), CostLimitError);  // no deadline
    CHECK(weighed.load() == before + 1);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_infeasible == 1);
    CHECK(stats.items_rejected_error == 1);
    batcher.close();
    CHECK(batcher.stats().items_processed == 5);
}

TEST_CASE("weighted: close wakes a producer waiting for pending cost") {
    Recorder recorder;
    recorder.hold = true;
    auto options = weighed(0, 10);
    options.max_batch_size(1).max_delay(0ns);
    Batcher<std::string> batcher(options, by_length(), std::ref(recorder));
    batcher.post(std::string(10, 'a'));
    wait_until([&] { return recorder.started.load() == 1; });
    std::atomic<int> closed{0};
    std::thread producer([&] {
        try {
            batcher.post(std::string(3, 'b'));
        } catch (const ClosedError&) {
            closed = 1;
        }
    });
    wait_until([&] { return batcher.waiting_producers() == 1; });
    std::thread closer([&] { batcher.close(); });
    producer.join();
    recorder.gate.open();
    closer.join();
    CHECK(closed == 1);
    CHECK(batcher.stats().items_rejected_closed == 1);
    CHECK(recorder.snapshot() == Batches{{std::string(10, 'a')}});
}

TEST_CASE("weighted: bulk submissions split runs by cost and accept a prefix at the bound") {
    ManualClock clock;
    Recorder recorder;
    {
        Batcher<std::string, void, ManualClock> batcher(weighed(6), by_length(), std::ref(recorder),
                                                        clock);
        std::vector<std::string> run{"aa", "bb", "cc", "ddd", "eeee", "f"};
        batcher.post_n(std::make_move_iterator(run.begin()), run.size());
        std::vector<Handle<void>> handles;
        std::vector<std::string> more{"gg", "hhhhhhh"};
        batcher.submit_n(more.begin(), more.size(), std::back_inserter(handles));
        CHECK(handles.size() == 2);
    }
    CHECK(recorder.snapshot() ==
          Batches{{"aa", "bb", "cc"}, {"ddd"}, {"eeee", "f"}, {"gg"}, {"hhhhhhh"}});

    Recorder held;
    held.hold = true;
    auto options = weighed(0, 10);
    options.max_batch_size(1).max_delay(0ns);
    Batcher<std::string> bounded(options, by_length(), std::ref(held));
    std::vector<std::string> run{"aaaa", "bbbb", "ccc", "d"};
    const BulkResult result = bounded.try_post_n(run.begin(), run.size());
    CHECK(result.status == SubmitStatus::full);
    CHECK(result.accepted == 2);  // 4 + 4; "ccc" would make 11
    CHECK(bounded.stats().items_rejected_full == 2);
    held.gate.open();
    bounded.close();
    CHECK(held.snapshot() == Batches{{"aaaa"}, {"bbbb"}});
}

TEST_CASE("weighted: an item whose construction throws leaves no cost behind") {
    struct Fussy {
        std::size_t size;
        explicit Fussy(std::size_t n) : size(n) {}
        Fussy(const Fussy& other) : size(other.size) {
            if (size == 13) {
                throw std::runtime_error("unlucky");
            }
        }
    };
    std::atomic<std::size_t> processed{0};
    Batcher<Fussy> batcher(weighed(100, 100), cost_by([](const Fussy& f) { return f.size; }),
                           [&](Batch<Fussy>& batch) { processed += batch.size(); });
    const Fussy ok(5);
    const Fussy unlucky(13);
    batcher.post(ok);
    CHECK_THROWS_AS(batcher.post(unlucky), std::runtime_error);
    batcher.post(ok);
    batcher.close();
    CHECK(processed == 2);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_error == 1);
    CHECK(stats.item_cost_total == 10);
    CHECK(batcher.pending_cost() == 0);
}

TEST_CASE("weighted: cost bounds without a cost function are refused at construction") {
    const auto process = [](Batch<int>&) {};
    try {
        Batcher<int> batcher(Options{}.max_batch_cost(4096), process);
        FAIL("no exception");
    } catch (const std::invalid_argument& error) {
        CHECK(std::string(error.what()).find("max_batch_cost 4096 needs a cost function") !=
              std::string::npos);
    }
    CHECK_THROWS_AS(Batcher<int>(Options{}.max_pending_cost(1), process), std::invalid_argument);
}

TEST_CASE("weighted: concurrent producers: every item once, no batch above the bound") {
    constexpr std::size_t producers = 4;
    constexpr std::size_t per_producer = 2000;
    constexpr std::size_t bound = 64;
    std::mutex mutex;
    std::vector<std::uint64_t> seen(producers * per_producer, 0);
    std::atomic<bool> over{false};
    {
        auto options = Options{}
                           .max_batch_size(32)
                           .max_delay(50us)
                           .max_batch_cost(bound)
                           .max_pending_cost(4 * bound)
                           .workers(2);
        Batcher<std::uint64_t> batcher(
            options, cost_by([](const std::uint64_t& id) { return id % 17 == 0 ? 100 : id % 9; }),
            [&](Batch<std::uint64_t>& batch) {
                std::size_t cost = 0;
                for (const std::uint64_t id : batch) {
                    cost += id % 17 == 0 ? 100 : id % 9;
                }
                if (cost > bound && batch.size() > 1) {
                    over = true;
                }
                std::lock_guard<std::mutex> lock(mutex);
                for (const std::uint64_t id : batch) {
                    ++seen[id];
                }
            });
        test_support::run_concurrently(producers, [&](std::size_t p) {
            for (std::size_t i = 0; i < per_producer; ++i) {
                const std::uint64_t id = p * per_producer + i;
                if (id % 17 == 0) {
                    // oversized item: its own batch, and at most 100 of the 256 pending
                    batcher.post(id);
                } else if (i % 5 == 0) {
                    std::vector<std::uint64_t> one{id};
                    batcher.post_n(one.begin(), 1);
                } else {
                    batcher.post(id);
                }
            }
        });
        batcher.close();
        CHECK(batcher.pending_cost() == 0);
    }
    CHECK_FALSE(over.load());
    for (const std::uint64_t count : seen) {
        REQUIRE(count == 1);
    }
}
