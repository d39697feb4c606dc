// Tests of seal_policy.hpp: the sealing decision as a pure function of plain numbers (no
// threads, no clock), and the latency histogram the stats report it with.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "catch_shim.hpp"
#include "microbatch/seal_policy.hpp"
#include "microbatch/stats.hpp"

using microbatch::decide_seal;
using microbatch::DispatchReason;
using microbatch::LatencySummary;
using microbatch::LoadEstimate;
using microbatch::producer_seal_threshold;
using microbatch::quiet_window;
using microbatch::SealDecision;
using microbatch::SealInputs;
using microbatch::SealTrigger;
using microbatch::target_batch_size;

namespace {

constexpr std::int64_t ms = 1'000'000;  // nanoseconds
constexpr std::int64_t us = 1'000;

// A batch of 3 items opened at 0, B = 32, D = 1 ms, one worker free, no estimate yet.
SealInputs base() {
    SealInputs in;
    in.trigger = SealTrigger::timer;
    in.now = 100 * us;
    in.count = 3;
    in.opened_at = 0;
    in.last_change_at = 50 * us;
    in.max_batch_size = 32;
    in.max_delay = 1 * ms;
    in.in_flight = 0;
    in.max_in_flight = 1;
    in.lanes = 1;
    in.seal_early = true;
    return in;
}

// alpha = 1 ms, beta = 10 us, 8 items per ms arriving.
LoadEstimate busy_load() {
    LoadEstimate load;
    load.ready = true;
    load.arrival_rate = 8.0 / static_cast<double>(ms);
    load.per_batch_ns = 1.0 * ms;
    load.per_item_ns = 10.0 * us;
    return load;
}

}  // namespace

TEST_CASE("Seal policy does nothing for an empty batch", "[seal_policy]") {
    SealInputs in = base();
    in.count = 0;
    in.now = 10 * ms;
    const SealDecision decision = decide_seal(in);
    CHECK_FALSE(decision.seal);
    CHECK(decision.wake_at == SealDecision::never);
}

TEST_CASE("Seal policy seals a full batch even while every worker is busy", "[seal_policy]") {
    SealInputs in = base();
    in.count = 32;
    in.in_flight = 1;
    const SealDecision decision = decide_seal(in);
    CHECK(decision.seal);
    CHECK(decision.reason == DispatchReason::full);
}

TEST_CASE("Seal policy keeps a due batch open while every worker is busy", "[seal_policy]") {
    SealInputs in = base();
    in.now = 5 * ms;  // far past the deadline
    in.in_flight = 1;
    const SealDecision held = decide_seal(in);
    CHECK_FALSE(held.seal);
    CHECK(held.wake_at == SealDecision::never);  // a finishing worker asks again

    in.max_in_flight = 2;  // a second worker: now it is sealed
    const SealDecision sealed = decide_seal(in);
    CHECK(sealed.seal);
    CHECK(sealed.reason == DispatchReason::deadline);
}

TEST_CASE("Seal policy reports worker_free when a finishing worker seals a due batch",
          "[seal_policy]") {
    SealInputs in = base();
    in.trigger = SealTrigger::worker_finished;
    in.now = 3 * ms;
    const SealDecision decision = decide_seal(in);
    CHECK(decision.seal);
    CHECK(decision.reason == DispatchReason::worker_free);
}

TEST_CASE("Seal policy never lets a batch wait beyond max_delay while a worker is free",
          "[seal_policy]") {
    SealInputs in = base();
    in.seal_early = false;
    in.last_change_at = SealInputs::unset;
    in.now = 1 * ms - 1;
    const SealDecision before = decide_seal(in);
    CHECK_FALSE(before.seal);
    CHECK(before.wake_at == 1 * ms);
    in.now = 1 * ms;
    const SealDecision at = decide_seal(in);
    CHECK(at.seal);
    CHECK(at.reason == DispatchReason::deadline);
}

TEST_CASE("Seal policy with max_delay 0 seals as soon as a worker is free", "[seal_policy]") {
    SealInputs in = base();
    in.max_delay = 0;
    in.now = 0;
    in.count = 1;
    CHECK(decide_seal(in).seal);
    in.in_flight = 1;  // busy: grow instead
    CHECK_FALSE(decide_seal(in).seal);
    in.trigger = SealTrigger::worker_finished;
    in.in_flight = 0;
    in.count = 9;
    const SealDecision decision = decide_seal(in);
    CHECK(decision.seal);
    CHECK(decision.reason == DispatchReason::worker_free);
}

TEST_CASE("Seal policy target size is what arrives while one batch runs", "[seal_policy]") {
    const LoadEstimate load = busy_load();
    // r = 8/ms, alpha = 1 ms, beta = 10 us: n = r (alpha + beta n) -> n = 8 / (1 - 0.08) = 8.7.
    CHECK(target_batch_size(load, 1, 32) == 9);
    // Two workers share the arrivals: 4 / (1 - 0.04) = 4.17, rounded to the nearest count.
    CHECK(target_batch_size(load, 2, 32) == 4);
    CHECK(target_batch_size(load, 1, 6) == 6);  // capped at B

    LoadEstimate fast = load;
    fast.arrival_rate = 200.0 / static_cast<double>(ms);  // r * beta = 2: the workers fall behind
    CHECK(target_batch_size(fast, 1, 32) == 32);

    LoadEstimate idle = load;
    idle.arrival_rate = 0.1 / static_cast<double>(ms);
    CHECK(target_batch_size(idle, 1, 32) == 1);

    LoadEstimate free_batches = load;
    free_batches.per_batch_ns = 0.0;  // batching saves nothing: rule off
    CHECK(target_batch_size(free_batches, 1, 32) == 0);
    LoadEstimate not_ready = load;
    not_ready.ready = false;
    CHECK(target_batch_size(not_ready, 1, 32) == 0);
}

TEST_CASE("Seal policy seals early at the target size while a worker is free", "[seal_policy]") {
    SealInputs in = base();
    in.load = busy_load();  // target 9
    in.count = 8;
    CHECK_FALSE(decide_seal(in).seal);
    in.count = 9;
    const SealDecision decision = decide_seal(in);
    CHECK(decision.seal);
    CHECK(decision.reason == DispatchReason::early);

    in.in_flight = 1;  // busy: the target does not apply, the batch grows
    CHECK_FALSE(decide_seal(in).seal);
    in.in_flight = 0;
    in.seal_early = false;
    CHECK_FALSE(decide_seal(in).seal);
    in.seal_early = true;
    in.max_delay = -1;  // no time bound: batches fill up, nothing early
    CHECK_FALSE(decide_seal(in).seal);
}

TEST_CASE("Seal policy seals early when nothing arrived for the quiet window", "[seal_policy]") {
    LoadEstimate load = busy_load();
    load.per_batch_ns = 0.0;  // rule 5a off: only the quiet window
    // 8 items/ms: mean gap 125 us, quiet window 4 gaps = 500 us (within [20 us, D]).
    CHECK(quiet_window(load, 1, 1 * ms) == 500 * us);
    CHECK(quiet_window(load, 2, 10 * ms) == 1000 * us);  // each of 2 lanes sees half the rate
    CHECK(quiet_window(load, 1, 200 * us) == 200 * us);  // never beyond max_delay
    LoadEstimate flood = load;
    flood.arrival_rate = 1.0;  // one item per ns
    CHECK(quiet_window(flood, 1, 1 * ms) == microbatch::SealPolicyConstants::min_quiet_ns);

    // Items that come in bursts (clients answering their results): the gap inside a batch,
    // not the mean gap, sets the window. 10 us apart -> 40 us.
    LoadEstimate bursty = load;
    bursty.burst_gap_ns = 10.0 * us;
    CHECK(quiet_window(bursty, 1, 1 * ms) == 40 * us);

    SealInputs in = base();
    in.load = load;
    in.last_change_at = 100 * us;
    in.now = 599 * us;
    const SealDecision waiting = decide_seal(in);
    CHECK_FALSE(waiting.seal);
    CHECK(waiting.wake_at == 600 * us);  // the quiet window ends before the deadline
    in.now = 600 * us;
    const SealDecision quiet = decide_seal(in);
    CHECK(quiet.seal);
    CHECK(quiet.reason == DispatchReason::early);
}

TEST_CASE("Seal policy producer threshold agrees with the decision", "[seal_policy]") {
    const LoadEstimate load = busy_load();
    CHECK(producer_seal_threshold(load, 1, 32, 0, true) == 1);
    CHECK(producer_seal_threshold(load, 1, 32, 1 * ms, true) == 9);
    CHECK(producer_seal_threshold(load, 1, 32, 1 * ms, false) == 32);
    CHECK(producer_seal_threshold(load, 1, 32, -1, true) == 32);
    CHECK(producer_seal_threshold(LoadEstimate{}, 1, 32, 1 * ms, true) == 32);

    // A producer reads no clock: at the threshold the decision seals, below it it does not.
    for (const std::int64_t delay : {std::int64_t{0}, 1 * ms}) {
        SealInputs in = base();
        in.trigger = SealTrigger::producer;
        in.now = 0;
        in.opened_at = SealInputs::unset;
        in.last_change_at = SealInputs::unset;
        in.max_delay = delay;
        in.load = load;
        const std::size_t threshold = producer_seal_threshold(load, 1, 32, delay, true);
        in.count = threshold;
        CHECK(decide_seal(in).seal);
        if (threshold > 1) {
            in.count = threshold - 1;
            CHECK_FALSE(decide_seal(in).seal);
        }
    }
}

TEST_CASE("Latency histogram reports percentiles within a quarter of the true value",
          "[seal_policy][stats]") {
    LatencySummary summary;
    CHECK(summary.percentile(0.5).count() == 0);
    for (std::int64_t v = 1; v <= 1000; ++v) {
        ++summary.buckets[LatencySummary::bucket_of(v * 1000)];
        ++summary.count;
    }
    summary.max = std::chrono::nanoseconds(1000 * 1000);
    const auto p50 = summary.percentile(0.5).count();
    const auto p99 = summary.percentile(0.99).count();
    CHECK(p50 >= 500 * 1000);
    CHECK(p50 < 500 * 1000 * 5 / 4);
    CHECK(p99 >= 990 * 1000);
    CHECK(p99 <= 1000 * 1000);  // capped at max
    for (std::int64_t v : {std::int64_t{0}, std::int64_t{3}, std::int64_t{4}, std::int64_t{7},
                           std::int64_t{1} << 40}) {
        const std::size_t bucket = LatencySummary::bucket_of(v);
        CHECK(LatencySummary::bucket_upper(bucket).count() >= v);
        if (bucket > 0) {
            CHECK(LatencySummary::bucket_upper(bucket - 1).count() < v);
        }
    }
}

TEST_CASE("Seal policy seals early once the usual population of pending items is here",
          "[seal_policy]") {
    SealInputs in = base();
    in.load.ready = true;
    in.load.arrival_rate = 4.0 / static_cast<double>(ms);  // no target rule: alpha is 0
    in.load.population = 4.2;  // e.g. four clients that each wait for their result
    in.last_change_at = in.now;
    in.count = 3;
    in.pending = 3;
    CHECK_FALSE(decide_seal(in).seal);
    in.count = 4;
    in.pending = 4;
    const SealDecision decision = decide_seal(in);
    CHECK(decision.seal);
    CHECK(decision.reason == DispatchReason::early);
    in.in_flight = 1;  // busy: the batch grows instead
    in.pending = 12;
    CHECK_FALSE(decide_seal(in).seal);
    in.in_flight = 0;
    in.seal_early = false;
    in.pending = 4;
    CHECK_FALSE(decide_seal(in).seal);
}

TEST_CASE("Seal policy leaves fast streams to fill their batches", "[seal_policy]") {
    SealInputs in = base();
    in.load = busy_load();
    in.load.arrival_rate = 20.0 / 1000.0;  // 20 M items/s: 32 items fill in 1.6 us
    in.load.per_item_ns = 0.0;
    in.load.population = 4.0;
    in.count = 20;
    in.pending = 20;
    in.last_change_at = in.now;  // the stream has not paused: rule 5b stays out of it
    CHECK_FALSE(microbatch::count_rules_apply(in.load, 1, 32));
    CHECK_FALSE(decide_seal(in).seal);  // neither the target nor the population rule
    CHECK(producer_seal_threshold(in.load, 1, 32, 1 * ms, true) == 32);
    in.load.arrival_rate = 0.2 / 1000.0;  // 200 k items/s: 160 us to fill, slow enough
    CHECK(microbatch::count_rules_apply(in.load, 1, 32));
    CHECK(decide_seal(in).seal);
}

TEST_CASE("Seal policy target size waits for the usual population", "[seal_policy]") {
    // Four clients that each wait for their result, split into batches of 2: the measured rate
    // makes 2 the target, which alone would lock the loop into batches of 2. The population
    // (4 items pending at once) holds the batch until the other two clients are back.
    SealInputs in = base();
    in.load = busy_load();
    in.load.arrival_rate = 2.0 / static_cast<double>(ms);  // target 2
    in.load.per_item_ns = 0.0;
    in.load.population = 4.0;
    in.last_change_at = in.now;
    in.count = 2;
    in.pending = 2;
    CHECK(target_batch_size(in.load, 1, 32) == 2);
    CHECK_FALSE(decide_seal(in).seal);
    in.count = 4;
    in.pending = 4;
    CHECK(decide_seal(in).seal);
}

TEST_CASE("Seal policy knows a population only while its samples keep reaching the maximum",
          "[seal_policy]") {
    CHECK(microbatch::stable_population(4.0, 4.0) == 4.0);   // four waiting clients
    CHECK(microbatch::stable_population(4.0, 3.7) == 4.0);   // within 10 %
    CHECK(microbatch::stable_population(12.0, 5.0) == 0.0);  // independent arrivals: a tail
    CHECK(microbatch::stable_population(0.5, 0.5) == 0.0);   // less than one item
}

// ---- Rule 4b: item deadlines (issue 11) -----------------------------------------------------

TEST_CASE("Seal policy seals for an item deadline at the deadline minus the predicted batch time",
          "[seal_policy][deadlines]") {
    using microbatch::deadline_seal_time;
    using microbatch::SealPolicyConstants;
    SealInputs in = base();
    in.seal_early = false;
    in.max_delay = 100 * ms;  // far away: only rule 4b can seal
    in.load = busy_load();    // alpha 1 ms, beta 10 us
    in.count = 3;
    in.earliest_deadline = 10 * ms;
    // Predicted batch time: 1 ms + 3 * 10 us = 1.03 ms, stretched by 1.25, plus 50 us slack.
    const std::int64_t lead = static_cast<std::int64_t>(SealPolicyConstants::deadline_safety *
                                                        (1.0 * ms + 3 * 10.0 * us)) +
                              SealPolicyConstants::deadline_slack_ns;
    const std::int64_t seal_by = 10 * ms - lead;
    REQUIRE(deadline_seal_time(10 * ms, in.load, 3) == seal_by);
    REQUIRE(seal_by == 10 * ms - 1'337'500);

    in.now = seal_by - 1;
    SealDecision decision = decide_seal(in);
    REQUIRE_FALSE(decision.seal);
    REQUIRE(decision.wake_at == seal_by);  // earlier than opened_at + D

    in.now = seal_by;
    decision = decide_seal(in);
    REQUIRE(decision.seal);
    REQUIRE(decision.reason == DispatchReason::item_deadline);

    // A larger batch has to leave earlier.
    in.count = 20;
    in.now = seal_by - 100 * us;
    REQUIRE(deadline_seal_time(10 * ms, in.load, 20) < seal_by - 100 * us);
    REQUIRE(decide_seal(in).seal);
}

TEST_CASE("Seal policy's deadline rule without a cost estimate keeps only the slack",
          "[seal_policy][deadlines]") {
    SealInputs in = base();
    in.max_delay = -1;  // no time bound at all
    in.earliest_deadline = 5 * ms;
    in.now = 1 * ms;
    SealDecision decision = decide_seal(in);
    REQUIRE_FALSE(decision.seal);
    REQUIRE(decision.wake_at == 5 * ms - microbatch::SealPolicyConstants::deadline_slack_ns);
    in.now = decision.wake_at;
    decision = decide_seal(in);
    REQUIRE(decision.seal);
    REQUIRE(decision.reason == DispatchReason::item_deadline);
}

TEST_CASE("Seal policy's deadline rule waits for a worker like the time bound",
          "[seal_policy][deadlines]") {
    SealInputs in = base();
    in.in_flight = 1;  // the only worker is busy
    in.max_delay = 100 * ms;
    in.earliest_deadline = 5 * ms;
    in.now = 1 * ms;
    SealDecision decision = decide_seal(in);
    REQUIRE_FALSE(decision.seal);
    REQUIRE(decision.wake_at == 5 * ms - microbatch::SealPolicyConstants::deadline_slack_ns);
    in.now = 6 * ms;  // past due, still busy: hold, and no wake-up in the past
    decision = decide_seal(in);
    REQUIRE_FALSE(decision.seal);
    REQUIRE(decision.wake_at == 100 * ms);
    in.trigger = SealTrigger::worker_finished;
    in.in_flight = 0;
    decision = decide_seal(in);
    REQUIRE(decision.seal);
    REQUIRE(decision.reason == DispatchReason::item_deadline);
}

TEST_CASE("Seal policy ignores the deadline rule without item deadlines",
          "[seal_policy][deadlines]") {
    SealInputs in = base();
    in.seal_early = false;
    REQUIRE(in.earliest_deadline == SealInputs::unset);
    const SealDecision decision = decide_seal(in);
    REQUIRE_FALSE(decision.seal);
    REQUIRE(decision.wake_at == 1 * ms);
    // A deadline so far in the past that subtracting the lead would overflow still seals.
    in.earliest_deadline = std::numeric_limits<std::int64_t>::min() + 2;
    REQUIRE(decide_seal(in).seal);
}

TEST_CASE("Seal policy seals for producers waiting for pending cost once a worker is free",
          "[seal_policy]") {
    SealInputs in = base();
    in.max_delay = -1;  // no time bound: without rule 4c the batch would wait for ever
    in.seal_early = false;
    CHECK_FALSE(decide_seal(in).seal);

    in.cost_waiting = true;
    const SealDecision sealed = decide_seal(in);
    CHECK(sealed.seal);
    CHECK(sealed.reason == DispatchReason::full);

    in.in_flight = 1;  // every worker busy: grow; the finishing worker asks again
    const SealDecision held = decide_seal(in);
    CHECK_FALSE(held.seal);
    CHECK(held.wake_at == SealDecision::never);

    in.trigger = SealTrigger::worker_finished;
    in.in_flight = 0;
    CHECK(decide_seal(in).seal);

    in.count = 0;  // nothing to seal
    CHECK_FALSE(decide_seal(in).seal);
}
