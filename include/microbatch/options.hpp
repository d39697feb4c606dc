#pragma once
/**
 * @file options.hpp
 * @brief `microbatch::Options`: the run-time configuration of a Batcher.
 */

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {

/**
 * @brief Run-time configuration of a `Batcher`: a plain value with fluent setters.
 *
 * Each option has a getter (`opts.max_batch_size()`) and a setter returning `*this`
 * (`opts.max_batch_size(64)`), so options chain:
 * @code
 * auto opts = microbatch::Options{}.max_batch_size(256).max_delay(std::chrono::milliseconds(2));
 * @endcode
 * Setters store values as given; `validate()` (called by the Batcher constructor) rejects
 * invalid combinations with `std::invalid_argument` naming the option and its value.
 *
 * | option           | default | meaning                                                     |
 * |------------------|---------|-------------------------------------------------------------|
 * | `max_batch_size` | 64      | a batch is dispatched as soon as it holds this many items    |
 * | `max_delay`      | 1 ms    | ...or when its oldest item has waited this long              |
 * | `capacity`       | 0 = auto | items accepted but not yet completed: per lane max(4 x      |
 * |                  |         | max_batch_size, 1024) (less for many lanes, see `capacity`)  |
 * | `lanes`          | 1       | independent fill lanes; producers spread over them           |
 * | `workers`        | 1       | threads of the batcher's own pool (ignored with `executor`)  |
 * | `executor`       | none    | run batches on this executor instead of an owned pool        |
 * | `isolate_failures` | false | re-run a batch that threw in halves to isolate poison items   |
 * | `isolation_depth` | 64     | most halvings per failed batch (64: down to single items)    |
 * | `max_in_flight`  | 0 = auto | batches running before partial batches are held back:      |
 * |                  |         | the owned pool's workers, or hardware threads (executor)     |
 * | `seal_early`     | true    | seal a partial batch before max_delay when waiting cannot pay |
 *
 * Per-item deadlines (README "Deadlines"): `default_timeout` (0 = none), `deadline_sealing`
 * (true), `admission_control` (false). Item costs (with `cost_by`, README "Weighted
 * batches"): `max_batch_cost` (0 = none), `max_pending_cost` (0 = none).
 *
 * Thread safety: a plain value type; no internal synchronisation.
 */
class Options {
public:
    /// Largest batch size supported (the batch slot counter uses 24 bits).
    static constexpr std::size_t max_supported_batch_size = std::size_t{1} << 22;
    /// Most lanes supported.
    static constexpr std::size_t max_supported_lanes = 256;
    /// `max_in_flight` value meaning "no limit": the time bound seals partial batches whatever
    /// the workers are doing (the size/time-only rule of microbatch 0.x before issue 10).
    static constexpr std::size_t unlimited_in_flight = static_cast<std::size_t>(-1);
    /// Most batch buffers supported, over all lanes (the head word names a buffer in 16 bits):
    /// lanes x ceil(ceil(capacity / lanes) / max_batch_size) must not exceed it.
    static constexpr std::size_t max_supported_batch_buffers = std::size_t{1} << 16;

    /// @brief The size bound B: a batch is dispatched (reason `full`) when it holds B items.
    std::size_t max_batch_size() const noexcept { return max_batch_size_; }
    /// @brief Sets the size bound; must be in [1, max_supported_batch_size].
    Options& max_batch_size(std::size_t value) & noexcept {
        max_batch_size_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_batch_size(...)` moves.
    Options&& max_batch_size(std::size_t value) && noexcept {
        max_batch_size_ = value;
        return std::move(*this);
    }

    /// @brief The time bound: a partial batch is dispatched (reason `deadline`) once its oldest
    /// item has waited this long. `std::chrono::nanoseconds::max()` disables the time bound.
    std::chrono::nanoseconds max_delay() const noexcept { return max_delay_; }
    /// @brief Sets the time bound; must not be negative. Zero dispatches as soon as possible.
    Options& max_delay(std::chrono::nanoseconds value) & noexcept {
        max_delay_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_delay(...)` moves.
    Options&& max_delay(std::chrono::nanoseconds value) && noexcept {
        max_delay_ = value;
        return std::move(*this);
    }

    /**
     * @brief The bound on items accepted but not yet completed (queued, filling or processing).
     *
     * 0 (the default) means `default_lane_capacity(max_batch_size, lanes)` per lane: max(4 x
     * max_batch_size, 1024) items, the floor lowered only where 1024 one-item batches per lane
     * would not fit the buffer limit (more than 32 lanes at max_batch_size 1). The floor is
     * measured, not a multiple of B: at small B a bound of a few batches makes every batch wait
     * for its predecessor's hand-off to a worker (4 items at B = 1 ran 3-7x slower than a
     * hand-written batcher); 1024 items keep producers and workers apart at every B while memory
     * stays about 1024 x (sizeof(T) + 64) bytes per lane (bench/results/REPORT.md, "default
     * capacity"). Counted in items: each lane accepts
     * ceil(capacity / lanes) items not yet finished, whatever the sizes of the batches they are
     * in; when a producer's lane holds that many, blocking submits wait and `try_submit` reports
     * `full`. Storage is reserved up front and never grows: per lane, ceil(ceil(capacity /
     * lanes) / max_batch_size) buffers of max_batch_size slots for full batches, plus one buffer
     * per in-flight batch (`max_in_flight`, at most 64; none with `unlimited_in_flight`) for the
     * partial batches sealed while a worker is free. The full-batch buffers of all lanes
     * together must not exceed `max_supported_batch_buffers` (65,536), e.g. a capacity of at
     * most 65,536 x max_batch_size with one lane (the partial-batch room is dropped where it
     * would exceed it; partial batches may then make producers wait for a buffer early).
     * `Batcher::flush` seals partial batches whatever the workers do: many flushes in a row can
     * also make producers wait for a buffer before `capacity` items.
     */
    std::size_t capacity() const noexcept { return capacity_; }
    /// @brief Sets the capacity; must be 0 (automatic) or at least max_batch_size.
    Options& capacity(std::size_t value) & noexcept {
        capacity_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.capacity(...)` moves.
    Options&& capacity(std::size_t value) && noexcept {
        capacity_ = value;
        return std::move(*this);
    }

    /// @brief Threads of the pool the batcher owns (used only when no executor is set).
    std::size_t workers() const noexcept { return workers_; }
    /// @brief Sets the owned pool's size; must be >= 1 unless an executor is set.
    Options& workers(std::size_t value) & noexcept {
        workers_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.workers(...)` moves.
    Options&& workers(std::size_t value) && noexcept {
        workers_ = value;
        return std::move(*this);
    }

    /**
     * @brief Number of independent fill lanes (default 1).
     *
     * Each lane has its own batch being filled, its own claim counter and its own share of the
     * capacity; a producer thread always submits to the same lane (threads are spread over the
     * lanes round-robin in the order they first submit to any batcher). With one lane, every
     * producer claims slots on one shared atomic word; with as many lanes as concurrently
     * submitting threads, producers no longer contend on it.
     *
     * The price: items of different lanes never share a batch, so at a given arrival rate each
     * batch fills `lanes` times more slowly, and more batches leave on `max_delay` partially
     * filled. Why the default is one lane (bench/bench_lanes.cpp, 2 cores, README "Lanes"):
     * one lane per producer gave 1.3-1.9x the items/s of one lane to 2-4 threads posting flat
     * out at B = 256 while they ran in parallel, but nothing beyond noise at B = 1 or on a loaded
     * machine; and with two producers at 100 k-1 M items/s in total, 2 lanes raised the p50
     * latency 1.1-1.5x (to 4x under load) and cut batches by up to 29 %. Use more lanes when
     * several threads submit at millions of items/s on cores of their own; keep one when
     * batches should be as full as possible. Every guarantee (size and time bounds,
     * per-producer order, exactly-once) holds per lane and so for the batcher.
     */
    std::size_t lanes() const noexcept { return lanes_; }
    /// @brief Sets the number of lanes; must be in [1, max_supported_lanes].
    Options& lanes(std::size_t value) & noexcept {
        lanes_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.lanes(...)` moves.
    Options&& lanes(std::size_t value) && noexcept {
        lanes_ = value;
        return std::move(*this);
    }

    /**
     * @brief The limit on batches dispatched and not yet finished, above which partial batches
     *        are held back (see seal_policy.hpp, rule 3).
     *
     * While this many batches are in flight, the batch being filled is not sealed by its time
     * bound (nor early): it keeps growing until it is full, and the moment a batch finishes,
     * the worker that finished it seals the due batch. Full batches are always dispatched.
     * 0 (the default) means automatic: the owned pool's `workers`, or with an external
     * `executor` `std::thread::hardware_concurrency()` (at least 1), the most batches such an
     * executor can run at once on this machine. `unlimited_in_flight` restores the plain
     * size/time rule. Changeable at run time with `Batcher::set_max_in_flight`.
     */
    std::size_t max_in_flight() const noexcept { return max_in_flight_; }
    /// @brief Sets the in-flight limit (0 = automatic, `unlimited_in_flight` = none).
    Options& max_in_flight(std::size_t value) & noexcept {
        max_in_flight_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_in_flight(...)` moves.
    Options&& max_in_flight(std::size_t value) && noexcept {
        max_in_flight_ = value;
        return std::move(*this);
    }

    /**
     * @brief Whether a partial batch may be sealed before `max_delay` while a worker is free
     *        (default true; seal_policy.hpp, rule 5): when it already holds as many items as
     *        arrive while one batch runs, or when no item arrived for several mean gaps.
     *        Both use measurements (arrival rate, the online cost fit) and stay off until the
     *        batcher has seen enough batches. False: a partial batch waits for max_delay.
     */
    bool seal_early() const noexcept { return seal_early_; }
    /// @brief Turns early sealing on or off.
    Options& seal_early(bool value) & noexcept {
        seal_early_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.seal_early(...)` moves.
    Options&& seal_early(bool value) && noexcept {
        seal_early_ = value;
        return std::move(*this);
    }

    // ---- Deadlines (README "Deadlines") ------------------------------------------------------

    /**
     * @brief The deadline given to items submitted without one: accepted-time + this timeout
     *        (0, the default: none). Items past their deadline when their batch is formed are
     *        not processed and complete with `DeadlineExceeded`. Costs one clock read per submit
     *        when set; nothing when 0.
     */
    std::chrono::nanoseconds default_timeout() const noexcept { return default_timeout_; }
    /// @brief Sets the default timeout; must not be negative (0 = no default deadline).
    Options& default_timeout(std::chrono::nanoseconds value) & noexcept {
        default_timeout_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.default_timeout(...)` moves.
    Options&& default_timeout(std::chrono::nanoseconds value) && noexcept {
        default_timeout_ = value;
        return std::move(*this);
    }

    /**
     * @brief Whether a partial batch holding an item with a deadline is sealed early enough for
     *        that item to finish in time (default true; seal_policy.hpp, rule 4b): at its
     *        earliest deadline minus the predicted batch time, while a worker is free.
     */
    bool deadline_sealing() const noexcept { return deadline_sealing_; }
    /// @brief Turns deadline-aware sealing on or off.
    Options& deadline_sealing(bool value) & noexcept {
        deadline_sealing_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.deadline_sealing(...)` moves.
    Options&& deadline_sealing(bool value) && noexcept {
        deadline_sealing_ = value;
        return std::move(*this);
    }

    /**
     * @brief Admission control (default false): a submit with a deadline whose predicted
     *        completion is after its deadline is refused at once,
     *        with `SubmitStatus::infeasible` or a `DeadlineInfeasible` exception, and counted in
     *        `Stats::items_rejected_infeasible`. Items without a deadline are never refused.
     *        When a batch starts, items due before its predicted end (now + 1.25 (alpha +
     *        beta * slots)) are also removed as expired (`DeadlineExceeded`): they could only be
     *        late (unless that would leave the batch empty: then they run, and refresh the fit).
     *
     * The prediction: now + (ceil(P / B) * alpha + P * beta) / W + alpha + beta * min(B, P + 1),
     * with P = `Batcher::pending()` (accepted, unfinished items: the work ahead), B the batch
     * size in force, W the batches that run at once (the in-flight limit, at most the workers)
     * and alpha, beta the online cost fit (`Stats::batch_cost`; both 0, so everything is
     * admitted, until a batch has run). An idle batcher (P = 0) admits every item, so that a
     * fit that overestimates is corrected by the batches that run. It ignores the progress of
     * running batches, so it errs late by up to one batch time. Costs one clock read and O(lanes)
     * per deadline submit.
     */
    bool admission_control() const noexcept { return admission_control_; }
    /// @brief Turns admission control on or off.
    Options& admission_control(bool value) & noexcept {
        admission_control_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.admission_control(...)` moves.
    Options&& admission_control(bool value) && noexcept {
        admission_control_ = value;
        return std::move(*this);
    }

    /// @brief The in-flight limit the batcher uses: `max_in_flight()`, or when it is 0 the
    ///        owned pool's workers (no executor) or the hardware threads (executor), at least 1.
    std::size_t effective_max_in_flight() const noexcept {
        if (max_in_flight_ != 0) {
            return max_in_flight_;
        }
        if (!executor_) {
            return workers_ == 0 ? 1 : workers_;
        }
        const unsigned hardware = std::thread::hardware_concurrency();
        return hardware == 0 ? 1 : hardware;
    }

    /// @brief The external executor batches run on; empty means "use an owned pool".
    const Executor& executor() const noexcept { return executor_; }
    /// @brief Runs batches on @p value (shared pools, the application's own pool).
    Options& executor(Executor value) & {
        executor_ = std::move(value);
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.executor(...)` moves.
    Options&& executor(Executor value) && {
        executor_ = std::move(value);
        return std::move(*this);
    }

    /**
     * @brief Whether a batch whose `process_batch` threw is re-run in halves to isolate the
     *        items that make it fail (poison items); default false.
     *
     * Turning it on declares that `process_batch` is safe to call again on part of a batch it
     * threw for: idempotent (or at least harmless to repeat) for the items it was given, and it
     * must leave the items it was given valid and unmoved when it throws, because those same
     * items are passed again. (A call that returns normally is never repeated, so it may still
     * move from its items.) When a call throws, the batcher calls `process_batch` on the first
     * half of the items (`size / 2`), then on the second half, on the same worker thread; each
     * half that throws is split again, down to single items or `isolation_depth` splits. Only
     * the items of a failing sub-batch that is not split further get an exception, the one its
     * last call threw; every other item gets its result from the sub-batch call that succeeded.
     * A re-run's `Batch` is a sub-range of the same items, with the same `reason()` and
     * `sequence()`. Only exceptions trigger re-runs: a `ResultCountError` fails its (sub-)batch.
     *
     * Cost: for one poison item in a batch of n items, 2 x ceil(log2(n)) extra calls (16 for
     * n = 256); at most about 2 x log2(n) per poison item with several. If every item fails
     * (say the backend is down), a batch costs up to 2n - 2 extra calls, or 2^(d+1) - 2 with
     * `isolation_depth` d: bound the depth when failures may be transient. `Stats` counts the
     * re-runs (`isolation_runs`).
     */
    bool isolate_failures() const noexcept { return isolate_failures_; }
    /// @brief Turns failure isolation on or off (see `isolate_failures()`).
    Options& isolate_failures(bool value) & noexcept {
        isolate_failures_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.isolate_failures(...)` moves.
    Options&& isolate_failures(bool value) && noexcept {
        isolate_failures_ = value;
        return std::move(*this);
    }

    /// Most splits `isolation_depth` accepts (and its default): deeper than any batch needs
    /// (max_supported_batch_size reaches single items after 22), so "down to single items".
    static constexpr std::size_t max_isolation_depth = 64;

    /**
     * @brief How many times `isolate_failures` may halve a failed batch along one path (default
     *        `max_isolation_depth`: down to single items). With depth d, a failing sub-batch of
     *        the d-th split is not split again: all its items get its exception. Ignored while
     *        `isolate_failures` is off.
     */
    std::size_t isolation_depth() const noexcept { return isolation_depth_; }
    /// @brief Sets the split depth; must be in [1, max_isolation_depth].
    Options& isolation_depth(std::size_t value) & noexcept {
        isolation_depth_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.isolation_depth(...)` moves.
    Options&& isolation_depth(std::size_t value) && noexcept {
        isolation_depth_ = value;
        return std::move(*this);
    }

    /// The default capacity's floor per lane, in items (see `capacity`).
    static constexpr std::size_t default_capacity_floor = 1024;

    /// @brief The automatic capacity of one lane: max(4 x @p batch_size, 1024), the floor
    ///        lowered to what half the buffer limit allows per lane (see `capacity`).
    ///        Complexity O(1); never throws.
    static constexpr std::size_t default_lane_capacity(std::size_t batch_size,
                                                       std::size_t lanes) noexcept {
        const std::size_t lane_buffers = max_supported_batch_buffers / (lanes == 0 ? 1 : lanes) / 2;
        const std::size_t floor_batches = (default_capacity_floor + batch_size - 1) / batch_size;
        const std::size_t floor = batch_size * std::min(floor_batches, lane_buffers);
        return std::max(4 * batch_size, floor);
    }

    /// @brief The capacity asked for: `capacity()`, or `default_lane_capacity(max_batch_size,
    ///        lanes) x lanes` when it is 0 (the batcher rounds it up to whole batches per lane,
    ///        see `capacity`).
    std::size_t effective_capacity() const noexcept {
        const std::size_t lanes = lanes_ == 0 ? 1 : lanes_;
        return capacity_ != 0
                   ? capacity_
                   : default_lane_capacity(max_batch_size_ == 0 ? 1 : max_batch_size_, lanes) *
                         lanes;
    }

    /**
     * @brief The bound on a batch's total item cost (0, the default: none). Needs a cost
     *        function: pass `microbatch::cost_by(f)` to the Batcher constructor (it throws
     *        `std::invalid_argument` otherwise).
     *
     * A batch is sealed (reason `full`) as soon as its items' costs add up to this bound, and
     * before an item that would take the total above it: the item then opens the next batch.
     * An item costing more than the bound on its own gets a batch of its own, sealed at once
     * (counted in `Stats::items_oversized`). `max_batch_size` still bounds the item count. With
     * this bound a lane's producers claim slots under a per-lane mutex (held for the claim
     * only, never while waiting or constructing the item): the submit path is no longer
     * lock-free, and bulk submissions claim one slot per item.
     */
    std::size_t max_batch_cost() const noexcept { return max_batch_cost_; }
    /// @brief Sets the batch cost bound (0: none).
    Options& max_batch_cost(std::size_t value) & noexcept {
        max_batch_cost_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_batch_cost(...)` moves.
    Options&& max_batch_cost(std::size_t value) && noexcept {
        max_batch_cost_ = value;
        return std::move(*this);
    }

    /**
     * @brief The bound on the total cost of pending items, accepted but not yet finished, like
     *        Kafka's `buffer.memory` (0, the default: none). Needs a cost function, as
     *        `max_batch_cost`.
     *
     * A submission that would take the total above it is treated as at capacity: blocking
     * forms wait (in arrival order, so a heavy item is not starved by light ones), `try_` forms
     * return `full` at once, timed forms wait up to their timeout. An item costing more than
     * this bound on its own could never be admitted: every submit form throws
     * `CostLimitError` for it, leaving it untouched. Applies in addition to `capacity`.
     */
    std::size_t max_pending_cost() const noexcept { return max_pending_cost_; }
    /// @brief Sets the pending cost bound (0: none).
    Options& max_pending_cost(std::size_t value) & noexcept {
        max_pending_cost_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_pending_cost(...)` moves.
    Options&& max_pending_cost(std::size_t value) && noexcept {
        max_pending_cost_ = value;
        return std::move(*this);
    }

    /**
     * @brief Throws `std::invalid_argument` naming the first invalid option and its value.
     *
     * Checks: max_batch_size in [1, max_supported_batch_size]; max_delay >= 0; capacity 0 or
     * >= max_batch_size; lanes in [1, max_supported_lanes]; at most max_supported_batch_buffers
     * batch buffers over all lanes (see `capacity`); workers >= 1 when no executor is set;
     * isolation_depth in [1, max_isolation_depth].
     */
    void validate() const {
        if (max_batch_size_ == 0 || max_batch_size_ > max_supported_batch_size) {
            fail("max_batch_size must be in [1, " + std::to_string(max_supported_batch_size) +
                 "] (got " + std::to_string(max_batch_size_) + ")");
        }
        if (max_delay_.count() < 0) {
            fail("max_delay must not be negative (got " + std::to_string(max_delay_.count()) +
                 "ns)");
        }
        if (capacity_ != 0 && capacity_ < max_batch_size_) {
            fail("capacity must be 0 (automatic) or >= max_batch_size " +
                 std::to_string(max_batch_size_) + " (got " + std::to_string(capacity_) + ")");
        }
        if (lanes_ == 0 || lanes_ > max_supported_lanes) {
            fail("lanes must be in [1, " + std::to_string(max_supported_lanes) + "] (got " +
                 std::to_string(lanes_) + ")");
        }
        // After the checks above, so that max_batch_size_ and lanes_ are non-zero. Rounded up
        // without overflow, even for a capacity near SIZE_MAX.
        const std::size_t capacity = effective_capacity();
        const std::size_t lane_items = capacity / lanes_ + (capacity % lanes_ != 0 ? 1 : 0);
        const std::size_t per_lane =
            lane_items / max_batch_size_ + (lane_items % max_batch_size_ != 0 ? 1 : 0);
        if (per_lane > max_supported_batch_buffers / lanes_) {
            fail("capacity / max_batch_size must be <= " +
                 std::to_string(max_supported_batch_buffers) +
                 " batches in all lanes (got capacity " + std::to_string(capacity) +
                 ", max_batch_size " + std::to_string(max_batch_size_) + ", lanes " +
                 std::to_string(lanes_) + ")");
        }
        if (default_timeout_.count() < 0) {
            fail("default_timeout must not be negative (got " +
                 std::to_string(default_timeout_.count()) + "ns)");
        }
        if (!executor_ && workers_ == 0) {
            fail("workers must be >= 1 when no executor is set (got 0)");
        }
        if (isolation_depth_ == 0 || isolation_depth_ > max_isolation_depth) {
            fail("isolation_depth must be in [1, " + std::to_string(max_isolation_depth) +
                 "] (got " + std::to_string(isolation_depth_) + ")");
        }
    }

private:
    [[noreturn]] static void fail(const std::string& message) {
        MICROBATCH_THROW(std::invalid_argument("microbatch::Options: " + message));
    }

    std::size_t max_batch_size_ = 64;
    std::chrono::nanoseconds max_delay_ = std::chrono::milliseconds(1);
    std::size_t capacity_ = 0;
    std::size_t workers_ = 1;
    std::size_t lanes_ = 1;
    std::size_t max_in_flight_ = 0;
    bool seal_early_ = true;
    std::chrono::nanoseconds default_timeout_{0};
    bool deadline_sealing_ = true;
    bool admission_control_ = false;
    Executor executor_;
    bool isolate_failures_ = false;
    std::size_t isolation_depth_ = max_isolation_depth;
    std::size_t max_batch_cost_ = 0;
    std::size_t max_pending_cost_ = 0;
};

}  // namespace microbatch
