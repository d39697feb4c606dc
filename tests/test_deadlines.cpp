// Tests of per-item deadlines, cancellation and admission control (issue 11). Time is a
// ManualClock; process_batch advances it to model the cost of a batch where a test needs the
// online cost fit. Nothing here measures time: waits are for events.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::DispatchReason;
using microbatch::Handle;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

using Doubler = Batcher<int, int, ManualClock>;

// Records every item process_batch sees and the reason of each batch; optionally holds the
// first batch on a gate, and advances the clock by alpha + beta * n per batch (a modelled cost).
struct Recorder {
    std::mutex mutex;
    std::vector<int> seen;
    std::vector<DispatchReason> reasons;
    std::atomic<int> started{0};
    bool hold_first = false;
    Gate hold;
    ManualClock* clock = nullptr;
    std::chrono::nanoseconds alpha{0};
    std::chrono::nanoseconds beta{0};

    std::vector<int> operator()(Batch<int>& batch) {
        if (started.fetch_add(1) == 0 && hold_first) {
            hold.wait();
        }
        std::vector<int> out;
        {
            std::lock_guard<std::mutex> lock(mutex);
            for (int x : batch) {
                seen.push_back(x);
                out.push_back(2 * x);
            }
            reasons.push_back(batch.reason());
        }
        if (clock != nullptr && (alpha.count() != 0 || beta.count() != 0)) {
            clock->advance(alpha + beta * static_cast<std::int64_t>(batch.size()));
        }
        return out;
    }
    std::vector<int> items() {
        std::lock_guard<std::mutex> lock(mutex);
        return seen;
    }
    std::vector<DispatchReason> batch_reasons() {
        std::lock_guard<std::mutex> lock(mutex);
        return reasons;
    }
};

Doubler make(Recorder& recorder, ManualClock& clock, Options options) {
    return Doubler(
        std::move(options), [&recorder](Batch<int>& batch) { return recorder(batch); }, clock);
}

template <class Predicate>
void wait_until(Predicate predicate) {
    while (!predicate()) {
        std::this_thread::yield();
    }
}

template <class Error, class R>
bool fails_with(Handle<R>& handle) {
    try {
        handle.get();
    } catch (const Error&) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

template <class Error>
bool is_error(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const Error&) {
        return true;
    } catch (...) {
        return false;
    }
}

// Teaches the batcher's cost fit alpha = 1 ms, beta = 10 us: flushed batches of 1 and 4 items,
// each advancing the clock by its modelled cost.
void train(Doubler& batcher, Recorder& recorder, ManualClock& clock) {
    recorder.clock = &clock;
    recorder.alpha = 1ms;
    recorder.beta = 10us;
    for (int round = 0; round < 4; ++round) {
        for (int size : {1, 4}) {
            for (int i = 0; i < size; ++i) {
                batcher.post(1000 + i);
            }
            batcher.flush();
            batcher.wait_idle();
        }
    }
}

}  // namespace

TEST_CASE("Expired items never reach process_batch, whatever the submit form",
          "[deadlines][expiry]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher =
        make(recorder, clock, Options{}.max_batch_size(32).max_delay(1s).deadline_sealing(false));
    std::atomic<int> expired_callbacks{0};
    std::atomic<int> other_callbacks{0};
    const auto callback = [&](Outcome<int>&& outcome) {
        if (!outcome && is_error<microbatch::DeadlineExceeded>(outcome.error())) {
            expired_callbacks.fetch_add(1);
        } else {
            other_callbacks.fetch_add(1);
        }
    };
    const auto due = clock.now() + 1ms;  // an absolute deadline
    Handle<int> h1 = batcher.submit(due, 1);
    batcher.submit(1ms, 2, callback);  // a timeout
    batcher.post(due, 3);
    REQUIRE(batcher.try_submit(due, 4) == SubmitStatus::accepted);
    REQUIRE(batcher.try_submit(due, 5, callback) == SubmitStatus::accepted);
    auto r6 = batcher.try_submit_handle(1ms, 6);
    REQUIRE(r6.accepted());
    REQUIRE(batcher.submit_for(due, 7, 1s) == SubmitStatus::accepted);
    REQUIRE(batcher.submit_for(due, 8, callback, 1s) == SubmitStatus::accepted);
    auto r9 = batcher.submit_for_handle(due, 9, 1s);
    REQUIRE(r9.accepted());
    // Live items: a later deadline, and none at all.
    Handle<int> live_deadline = batcher.submit(2ms, 10);
    Handle<int> live_plain = batcher.submit(11);

    clock.advance(1ms);  // the deadline of items 1-9 is now (due at d means expired at d)
    batcher.flush();
    batcher.wait_idle();

    CHECK(recorder.items() == std::vector<int>{10, 11});
    CHECK(fails_with<microbatch::DeadlineExceeded>(h1));
    CHECK(fails_with<microbatch::DeadlineExceeded>(r6.handle));
    CHECK(fails_with<microbatch::DeadlineExceeded>(r9.handle));
    CHECK(expired_callbacks.load() == 2 + 1);
    CHECK(other_callbacks.load() == 0);
    CHECK(live_deadline.get() == 20);
    CHECK(live_plain.get() == 22);
    const auto stats = batcher.stats();
    CHECK(stats.items_expired == 9);
    CHECK(stats.items_processed == 2);
    CHECK(stats.items_accepted == 11);
    CHECK(stats.items_accepted ==
          stats.items_processed + stats.items_failed + stats.items_expired + stats.items_cancelled);
    CHECK(stats.batch_size_max == 2);  // the batch's size is its live items
}

TEST_CASE("A batch whose items all expired is not given to process_batch", "[deadlines][expiry]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(4).deadline_sealing(false));
    auto a = batcher.submit(100us, 1);
    auto b = batcher.submit(200us, 2);
    clock.advance(1ms);  // max_delay: the batch is sealed now, with both items expired
    batcher.wait_idle();
    CHECK(recorder.started.load() == 0);
    CHECK(fails_with<microbatch::DeadlineExceeded>(a));
    CHECK(fails_with<microbatch::DeadlineExceeded>(b));
    CHECK(batcher.stats().items_expired == 2);
    CHECK(batcher.stats().batches_completed == 1);
}

TEST_CASE("Options::default_timeout gives every item without a deadline one",
          "[deadlines][expiry]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(
        recorder, clock,
        Options{}.max_batch_size(8).max_delay(1s).default_timeout(1ms).deadline_sealing(false));
    auto plain = batcher.submit(1);
    batcher.post(2);
    auto own = batcher.submit(5ms, 3);  // an explicit deadline wins over the default
    clock.advance(1ms);
    auto late = batcher.submit(4);  // accepted at 1 ms: due at 2 ms
    batcher.flush();
    batcher.wait_idle();
    CHECK(fails_with<microbatch::DeadlineExceeded>(plain));
    CHECK(own.get() == 6);
    CHECK(late.get() == 8);
    CHECK(recorder.items() == std::vector<int>{3, 4});
    CHECK(batcher.stats().items_expired == 2);
    REQUIRE_THROWS_AS(
        Doubler(
            Options{}.default_timeout(-1ns), [](Batch<int>&) { return std::vector<int>{}; }, clock),
        std::invalid_argument);
}

TEST_CASE("Deadline-aware sealing seals a batch at its earliest deadline minus the slack",
          "[deadlines][sealing]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher =
        make(recorder, clock, Options{}.max_batch_size(16).max_delay(100ms).seal_early(false));
    auto first = batcher.submit(20ms, 1);
    auto urgent = batcher.submit(10ms, 2);  // lowers the batch's earliest deadline
    auto plain = batcher.submit(3);
    // No cost estimate yet: the predicted batch time is 0, only the slack is kept.
    const auto slack = std::chrono::nanoseconds(microbatch::SealPolicyConstants::deadline_slack_ns);
    clock.advance(10ms - slack - 1ns);
    CHECK(batcher.stats().batches_dispatched() == 0);
    clock.advance(1ns);
    CHECK(batcher.stats().batches_item_deadline == 1);
    batcher.wait_idle();
    CHECK(first.get() == 2);
    CHECK(urgent.get() == 4);
    CHECK(plain.get() == 6);
    CHECK(batcher.stats().items_expired == 0);
    CHECK(recorder.batch_reasons() == std::vector<DispatchReason>{DispatchReason::item_deadline});
}

TEST_CASE("Deadline-aware sealing leaves time for the predicted batch time",
          "[deadlines][sealing]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher =
        make(recorder, clock, Options{}.max_batch_size(16).max_delay(100ms).seal_early(false));
    train(batcher, recorder, clock);
    const auto fit = batcher.stats().batch_cost.fit();
    REQUIRE(fit);
    CHECK(fit->per_batch.count() == Approx(1e-3).epsilon(1e-6));
    CHECK(fit->per_item.count() == Approx(1e-5).epsilon(1e-6));

    const auto start = clock.now();
    auto a = batcher.submit(10ms, 1);
    auto b = batcher.submit(10ms, 2);
    auto c = batcher.submit(10ms, 3);
    // Seal at 10 ms - (1.25 * (1 ms + 3 * 10 us) + 50 us) = 10 ms - 1.3375 ms, within the
    // rounding of the fit.
    clock.advance(10ms - 1'337'500ns - 1us);
    CHECK(batcher.stats().batches_item_deadline == 0);
    clock.advance(2us);
    CHECK(batcher.stats().batches_item_deadline == 1);
    batcher.wait_idle();
    CHECK(a.get() == 2);
    CHECK(b.get() == 4);
    CHECK(c.get() == 6);
    // The modelled batch ran 1.03 ms from the seal and finished before the deadline.
    CHECK(clock.now() - start < 10ms);
    CHECK(batcher.stats().items_expired == 0);
}

TEST_CASE("Deadline sealing off: a batch waits for max_delay and its items expire",
          "[deadlines][sealing]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(
        recorder, clock,
        Options{}.max_batch_size(16).max_delay(20ms).seal_early(false).deadline_sealing(false));
    auto a = batcher.submit(10ms, 1);
    clock.advance(19ms);
    CHECK(batcher.stats().batches_dispatched() == 0);
    clock.advance(1ms);
    batcher.wait_idle();
    CHECK(fails_with<microbatch::DeadlineExceeded>(a));
    CHECK(recorder.started.load() == 0);
}

TEST_CASE("Admission control refuses an item predicted to finish after its deadline",
          "[deadlines][admission]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}
                            .max_batch_size(16)
                            .max_delay(100ms)
                            .seal_early(false)
                            .deadline_sealing(false)
                            .admission_control(true));
    {
        // Before anything was measured every item is admitted.
        Recorder fresh_recorder;
        auto fresh = make(fresh_recorder, clock, Options{}.admission_control(true));
        REQUIRE(fresh.try_submit(1ns, 1) == SubmitStatus::accepted);
    }
    train(batcher, recorder, clock);

    // Items without a deadline are never refused.
    CHECK(batcher.try_submit(11) == SubmitStatus::accepted);
    // One item pending: drain (1 ms + 10 us) + own batch (1 ms + 2 * 10 us) = 2.03 ms.
    CHECK(batcher.try_submit(2030us - 1us, 2) == SubmitStatus::infeasible);
    CHECK(batcher.try_submit(2030us + 1us, 3) == SubmitStatus::accepted);
    // Two pending: drain (1 ms + 2 * 10 us) + own batch (1 ms + 3 * 10 us) = 2.05 ms.
    CHECK(batcher.try_submit(2050us - 1us, 4) == SubmitStatus::infeasible);
    CHECK(batcher.try_submit(2050us + 1us, 5) == SubmitStatus::accepted);
    // Every form reports it: a status, or DeadlineInfeasible from the throwing ones.
    CHECK(batcher.try_submit_handle(1us, 6).status == SubmitStatus::infeasible);
    CHECK(batcher.submit_for(1us, 7, 1s) == SubmitStatus::infeasible);
    CHECK_THROWS_AS(batcher.submit(1us, 8), microbatch::DeadlineInfeasible);
    CHECK_THROWS_AS(batcher.post(1us, 9), microbatch::DeadlineInfeasible);
    bool called = false;
    CHECK_THROWS_AS(batcher.submit(1us, 10, [&called](Outcome<int>&&) { called = true; }),
                    microbatch::DeadlineInfeasible);
    batcher.flush();
    batcher.wait_idle();
    CHECK_FALSE(called);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_infeasible == 7);
    CHECK(stats.items_submitted == stats.items_accepted + stats.items_rejected());
    const auto items = recorder.items();
    CHECK(std::count(items.begin(), items.end(), 2) == 0);
    CHECK(std::count(items.begin(), items.end(), 4) == 0);
    CHECK(std::count(items.begin(), items.end(), 11) == 1);
    // Items 3 and 5 were admitted behind the queue; in one batch with item 11 both finish in
    // time (predicted end 1.25 * (1 ms + 3 * 10 us)), so both run.
    CHECK(std::count(items.begin(), items.end(), 3) == 1);
    CHECK(std::count(items.begin(), items.end(), 5) == 1);
    CHECK(stats.items_expired == 0);
}

TEST_CASE(
    "With admission control, items that could only finish late expire when their batch starts",
    "[deadlines][admission]") {
    const bool admission = GENERATE(false, true);
    INFO("admission_control " << admission);
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}
                            .max_batch_size(16)
                            .max_delay(100ms)
                            .seal_early(false)
                            .deadline_sealing(false)
                            .admission_control(admission));
    train(batcher, recorder, clock);
    // Admitted (idle); item 5 keeps the batch alive when item 1 is removed.
    auto handle = batcher.submit(1500us, 1);
    auto other = batcher.submit(5);
    clock.advance(600us);  // the batch would now end at 0.6 + 1.01 ms: after the deadline
    batcher.flush();
    batcher.wait_idle();
    if (admission) {
        CHECK(fails_with<microbatch::DeadlineExceeded>(handle));
        CHECK(batcher.stats().items_expired == 1);
    } else {
        CHECK(handle.get() == 2);  // due at 1.5 ms, alive at 0.6 ms: processed (and late)
        CHECK(batcher.stats().items_expired == 0);
    }
    CHECK(other.get() == 10);
}

TEST_CASE("Admission control cannot lock itself out with a fit that overestimates",
          "[deadlines][admission]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}
                            .max_batch_size(16)
                            .max_delay(100ms)
                            .seal_early(false)
                            .deadline_sealing(false)
                            .admission_control(true));
    train(batcher, recorder, clock);  // alpha 1 ms: a 0.5 ms deadline looks hopeless
    // Idle: admitted anyway, and alone in its batch it runs (the batch refreshes the fit).
    auto alone = batcher.submit(500us, 1);
    batcher.flush();
    batcher.wait_idle();
    CHECK(alone.get() == 2);
    // With an item that can finish in its batch, the hopeless one is removed.
    auto hopeless = batcher.submit(500us, 3);  // idle again: admitted
    auto fine = batcher.submit(4);             // no deadline: never refused
    batcher.flush();
    batcher.wait_idle();
    CHECK(fails_with<microbatch::DeadlineExceeded>(hopeless));
    CHECK(fine.get() == 8);
    CHECK(batcher.stats().items_expired == 1);
}

TEST_CASE("Handle::cancel before dispatch: the item is never processed", "[deadlines][cancel]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(8).max_delay(1s));
    auto keep = batcher.submit(1);
    auto drop = batcher.submit(2);
    auto dropped_handle = batcher.submit(3);
    REQUIRE(drop.cancel());
    CHECK(drop.ready());                               // completed at once
    CHECK_FALSE(drop.cancel());                        // a second cancel loses
    { Handle<int> gone = std::move(dropped_handle); }  // dropping a handle does not cancel
    batcher.flush();
    batcher.wait_idle();
    CHECK(fails_with<microbatch::Cancelled>(drop));
    CHECK(keep.get() == 2);
    CHECK(recorder.items() == std::vector<int>{1, 3});
    const auto stats = batcher.stats();
    CHECK(stats.items_cancelled == 1);
    CHECK(stats.items_processed == 2);
    CHECK(stats.items_accepted ==
          stats.items_processed + stats.items_failed + stats.items_expired + stats.items_cancelled);
}

TEST_CASE("Handle::cancel after its batch started loses and the result is delivered",
          "[deadlines][cancel]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = true;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(8).max_delay(1s));
    auto handle = batcher.submit(21);
    batcher.flush();
    wait_until([&] { return recorder.started.load() == 1; });  // claimed, inside process_batch
    CHECK_FALSE(handle.cancel());
    recorder.hold.open();
    CHECK(handle.get() == 42);
    batcher.wait_idle();
    CHECK(batcher.stats().items_cancelled == 0);

    auto done = batcher.submit(5);
    batcher.flush();
    done.wait();
    CHECK_FALSE(done.cancel());  // already complete
    CHECK(done.get() == 10);
    Handle<int> invalid;
    CHECK_THROWS_AS(invalid.cancel(), microbatch::Error);
}

TEST_CASE("A cancelled item with a deadline counts as cancelled, not expired",
          "[deadlines][cancel]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher =
        make(recorder, clock, Options{}.max_batch_size(8).max_delay(1s).deadline_sealing(false));
    auto handle = batcher.submit(1ms, 1);
    REQUIRE(handle.cancel());
    clock.advance(2ms);
    batcher.flush();
    batcher.wait_idle();
    CHECK(fails_with<microbatch::Cancelled>(handle));
    CHECK(batcher.stats().items_cancelled == 1);
    CHECK(batcher.stats().items_expired == 0);
}

TEST_CASE("ItemDeadline resolves timeouts without overflow", "[deadlines]") {
    using Due = microbatch::ItemDeadline<ManualClock>;
    const ManualClock::time_point now(5ms);
    CHECK(Due(now + 1ms).resolve(now) == now + 1ms);  // absolute: ignores now
    CHECK_FALSE(Due(now).relative());
    CHECK(Due(2ms).relative());
    CHECK(Due(2ms).resolve(now) == now + 2ms);
    CHECK(Due(-3ms).resolve(now) == now - 3ms);  // already due
    CHECK(Due(std::chrono::hours::max()).resolve(now) == ManualClock::time_point::max());
    CHECK(Due(std::chrono::nanoseconds::max()).resolve(now) == ManualClock::time_point::max());
    CHECK(Due(std::chrono::duration<double>(1e300)).resolve(now) == ManualClock::time_point::max());
    // A deadline at time_point::max() never expires.
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock, Options{}.max_batch_size(4));
    auto handle = batcher.submit(std::chrono::hours::max(), 7);
    clock.advance(24h);
    batcher.wait_idle();
    CHECK(handle.get() == 14);
}

// Bulk submissions (issue 13) with deadlines: every item of the run carries it; admission control
// judges the run by its last item (the run's other items count as work ahead of it) and admits or
// refuses it as a whole.
TEST_CASE("Bulk submissions with a deadline: expiry, and admission of the run as a whole",
          "[deadlines][admission][bulk]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}
                            .max_batch_size(16)
                            .max_delay(100ms)
                            .seal_early(false)
                            .deadline_sealing(false)
                            .admission_control(true));
    train(batcher, recorder, clock);
    CHECK(batcher.try_submit(11) == SubmitStatus::accepted);  // one item pending
    const std::vector<int> run{21, 22, 23};
    // The run's last item: 3 ahead (1 pending + 2 of the run): drain (1 ms + 3 * 10 us) + its
    // batch (1 ms + 4 * 10 us) = 2.07 ms.
    const auto refused = batcher.try_post_n(2070us - 1us, run.begin(), run.size());
    CHECK(refused.status == SubmitStatus::infeasible);
    CHECK(refused.accepted == 0);
    CHECK(batcher.stats().items_rejected_infeasible == 3);
    CHECK_THROWS_AS(batcher.post_n(1us, run.begin(), run.size()), microbatch::DeadlineInfeasible);
    std::vector<microbatch::Handle<int>> none;
    CHECK_THROWS_AS(batcher.submit_n(1us, run.begin(), run.size(), std::back_inserter(none)),
                    microbatch::DeadlineInfeasible);
    CHECK(none.empty());
    const auto admitted = batcher.try_post_n(2070us + 1us, run.begin(), run.size());
    CHECK(admitted.all_accepted());
    CHECK(admitted.accepted == 3);
    CHECK(batcher.stats().items_rejected_infeasible == 9);
    batcher.flush();
    batcher.wait_idle();
    const auto items = recorder.items();
    CHECK(std::count(items.begin(), items.end(), 21) == 1);  // only the admitted run ran

    // Expiry: a run admitted with a 10 ms deadline whose batch starts 20 ms later never reaches
    // process_batch; its handles say why.
    std::vector<microbatch::Handle<int>> handles;
    const std::vector<int> stale{31, 32};
    batcher.submit_n(clock.now() + 10ms, stale.begin(), stale.size(), std::back_inserter(handles));
    clock.advance(20ms);  // below max_delay: still open
    batcher.flush();
    batcher.wait_idle();
    REQUIRE(handles.size() == 2);
    CHECK(fails_with<microbatch::DeadlineExceeded>(handles[0]));
    CHECK(fails_with<microbatch::DeadlineExceeded>(handles[1]));
    const auto after = recorder.items();
    CHECK(std::count(after.begin(), after.end(), 31) == 0);
    CHECK(batcher.stats().items_expired >= 2);
}
