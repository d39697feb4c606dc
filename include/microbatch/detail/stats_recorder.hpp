#pragma once
/**
 * @file detail/stats_recorder.hpp
 * @brief Batcher internals: the live counters behind `microbatch::Stats` (StatsRecorder) and the
 *        accumulation of one timing summary (DurationRecorder).
 */

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>

#include "microbatch/batch.hpp"
#include "microbatch/cost_model.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/stats.hpp"

namespace microbatch {
namespace detail {

// Updates of a statistic whose writers are serialised by a mutex (StatsRecorder's completion
// mutex): a load and a store instead of a read-modify-write. relaxed: the mutex orders the
// writers; lock-free readers only want a recent value (snapshots are documented as not being
// one instant across fields).
template <class V>
void add_serialised(std::atomic<V>& target, V value) noexcept {
    target.store(target.load(std::memory_order_relaxed) + value, std::memory_order_relaxed);
}
template <class V>
void lower_serialised(std::atomic<V>& target, V value) noexcept {
    if (value < target.load(std::memory_order_relaxed)) {
        target.store(value, std::memory_order_relaxed);
    }
}
template <class V>
void raise_serialised(std::atomic<V>& target, V value) noexcept {
    if (value > target.load(std::memory_order_relaxed)) {
        target.store(value, std::memory_order_relaxed);
    }
}

/// Accumulation of one DurationSummary. Writers are serialised by the caller (StatsRecorder's
/// completion mutex); readers take snapshots without a lock.
class DurationRecorder {
public:
    void record(std::int64_t nanoseconds) noexcept {
        if (nanoseconds < 0) {
            nanoseconds = 0;
        }
        add_serialised(count_, std::uint64_t{1});
        add_serialised(total_, nanoseconds);
        lower_serialised(min_, nanoseconds);
        raise_serialised(max_, nanoseconds);
    }

    DurationSummary snapshot() const noexcept {
        DurationSummary summary;
        summary.count = count_.load(std::memory_order_relaxed);
        summary.total = std::chrono::nanoseconds(total_.load(std::memory_order_relaxed));
        const std::int64_t min = min_.load(std::memory_order_relaxed);
        summary.min = std::chrono::nanoseconds(summary.count == 0 ? 0 : min);
        summary.max = std::chrono::nanoseconds(max_.load(std::memory_order_relaxed));
        return summary;
    }

private:
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::int64_t> total_{0};
    std::atomic<std::int64_t> min_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> max_{0};
};

/**
 * @brief The batcher's live counters. Producers touch only the rejection counters (slow path);
 *        sealers and workers update the rest once per batch. All relaxed: these are statistics,
 *        nothing else is published through them.
 */
class StatsRecorder {
public:
    void rejected_full() noexcept { rejected_full_.fetch_add(1, std::memory_order_relaxed); }
    void rejected_closed() noexcept { rejected_closed_.fetch_add(1, std::memory_order_relaxed); }
    /// @p count more items refused with @p status (`full`, `closed` or `infeasible`): e.g. a
    /// bulk submission's rest.
    void rejected(SubmitStatus status, std::size_t count) noexcept {
        (status == SubmitStatus::closed       ? rejected_closed_
         : status == SubmitStatus::infeasible ? rejected_infeasible_
                                              : rejected_full_)
            .fetch_add(count, std::memory_order_relaxed);
    }
    void rejected_error() noexcept { rejected_error_.fetch_add(1, std::memory_order_relaxed); }
    /// Items of a batch being formed removed because their deadline passed (@p expired) or
    /// their handle cancelled them (@p cancelled); counted before they complete.
    void removed(std::size_t expired, std::size_t cancelled) noexcept {
        if (expired != 0) {
            expired_.fetch_add(expired, std::memory_order_relaxed);
        }
        if (cancelled != 0) {
            cancelled_.fetch_add(cancelled, std::memory_order_relaxed);
        }
    }
    void callback_exception() noexcept {
        callback_exceptions_.fetch_add(1, std::memory_order_relaxed);
    }

    /// A batch of @p size items was sealed for dispatch because of @p reason.
    void dispatched(std::size_t size, DispatchReason reason) noexcept {
        sealed_items_.fetch_add(size, std::memory_order_relaxed);
        by_reason_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
    }

    /// @p count slots of a dispatched batch held no item (their construction threw).
    void holes(std::size_t count) noexcept {
        sealed_items_.fetch_sub(count, std::memory_order_relaxed);
    }

    /// One item failed before its batch ran; counted at once, before its completion runs.
    void failed_early() noexcept {
        // relaxed: the completion that follows publishes it (release in the handle state or
        // the callback's own synchronisation), like the other counters.
        failed_.fetch_add(1, std::memory_order_relaxed);
    }

    /// completed()'s "no latency sample with this batch" (see item_latency()).
    static constexpr std::int64_t no_latency = std::numeric_limits<std::int64_t>::min();

    /// A batch finished: @p succeeded + @p failed items, plus @p failed_earlier items already
    /// counted by failed_early(); queue delay and processing time in ns; @p latency_ns: the
    /// batch's end-to-end sample when it is already known (else item_latency() later).
    void completed(std::size_t succeeded, std::size_t failed, bool batch_failed,
                   std::int64_t queue_delay_ns, std::int64_t dispatch_wait_ns,
                   std::int64_t processing_ns, std::size_t failed_earlier = 0,
                   std::int64_t latency_ns = no_latency) noexcept {
        const std::size_t size = succeeded + failed + failed_earlier;
        if (failed != 0) {
            // An RMW: failed_early() also writes this counter, without the mutex.
            failed_.fetch_add(failed, std::memory_order_relaxed);
        }
        // One mutex per finished batch (never on the submit path): the fitter updates several
        // moments together, and workers finish batches concurrently. The counters below are
        // written only here, under it, so each is a load and a store rather than an atomic
        // read-modify-write (about a dozen fewer locked instructions per batch).
        std::lock_guard<std::mutex> lock(completion_mutex_);
        const auto add = [](auto& counter, auto value) {
            add_serialised(counter, static_cast<decltype(counter.load())>(value));
        };
        add(processed_, succeeded);
        if (batch_failed) {
            add(batches_failed_, 1);
        }
        if (size > 0) {  // a batch whose every slot was a hole ran nothing: not a size sample
            lower_serialised(size_min_, static_cast<std::int64_t>(size));
            raise_serialised(size_max_, static_cast<std::int64_t>(size));
            std::size_t bucket = 0;
            while ((size >> (bucket + 1)) != 0 && bucket + 1 < histogram_.size()) {
                ++bucket;
            }
            add(histogram_[bucket], 1);
        }
        if (latency_ns != no_latency) {
            record_latency_locked(latency_ns);
        }
        queue_delay_.record(queue_delay_ns);
        dispatch_wait_.record(dispatch_wait_ns);
        processing_time_.record(processing_ns);
        if (!batch_failed && size > 0) {
            batch_cost_.add(size, std::chrono::nanoseconds(processing_ns < 0 ? 0 : processing_ns));
            // Published for the sealing policy, which must not take this mutex. Until two
            // batch sizes were seen the line is undetermined: the mean batch time stands in for
            // alpha (an upper bound), beta = 0. relaxed: two independent estimates.
            const std::optional<CostModel> model = batch_cost_.fit();
            const double alpha =
                model ? model->per_batch.count() * 1e9 : batch_cost_.mean_duration().count() * 1e9;
            const double beta = model ? model->per_item.count() * 1e9 : 0.0;
            fitted_per_batch_ns_.store(alpha, std::memory_order_relaxed);
            fitted_per_item_ns_.store(beta, std::memory_order_relaxed);
        }
        // Last, so that a snapshot seeing a batch as completed tends to see its items too.
        add(batches_completed_, 1);
    }

    /// Per-item outcomes of a batch, before its completed(): @p individually failed items
    /// (also passed to completed() as failed), whether it was @p isolated, and isolation's
    /// @p runs and @p runs_failed.
    void outcomes(std::size_t individually, bool isolated, std::size_t runs,
                  std::size_t runs_failed) noexcept {
        failed_individually_.fetch_add(individually, std::memory_order_relaxed);
        if (isolated) {
            batches_isolated_.fetch_add(1, std::memory_order_relaxed);
        }
        isolation_runs_.fetch_add(runs, std::memory_order_relaxed);
        isolation_runs_failed_.fetch_add(runs_failed, std::memory_order_relaxed);
    }

    /// A batch whose items' costs (cost_by) add up to @p cost finished; before completed().
    void batch_item_cost(std::uint64_t cost) noexcept {
        item_cost_total_.fetch_add(cost, std::memory_order_relaxed);
        std::uint64_t max = item_cost_max_.load(std::memory_order_relaxed);
        while (cost > max &&
               !item_cost_max_.compare_exchange_weak(max, cost, std::memory_order_relaxed)) {
        }
    }

    /// An item costing more than max_batch_cost was accepted (into a batch of its own).
    void oversized() noexcept { oversized_.fetch_add(1, std::memory_order_relaxed); }

    /// One end-to-end latency sample (ns), see Stats::item_latency.
    void item_latency(std::int64_t nanoseconds) noexcept {
        std::lock_guard<std::mutex> lock(completion_mutex_);
        record_latency_locked(nanoseconds);
    }

    /// The cost fit as last published by a worker: alpha and beta in ns (0, 0 before the first
    /// successful batch). Lock-free.
    void fitted_cost(double& per_batch_ns, double& per_item_ns) const noexcept {
        // relaxed: independent estimates, see completed().
        per_batch_ns = fitted_per_batch_ns_.load(std::memory_order_relaxed);
        per_item_ns = fitted_per_item_ns_.load(std::memory_order_relaxed);
    }

    /// Items sealed into batches so far (accepted items not yet in the open batch).
    std::uint64_t sealed_items() const noexcept {
        return sealed_items_.load(std::memory_order_relaxed);
    }

    /// Fills @p stats; @p open_items are the accepted items still in the filling batch.
    void snapshot(Stats& stats, std::uint64_t open_items) const noexcept {
        const auto load = [](const auto& counter) {
            return counter.load(std::memory_order_relaxed);
        };
        stats.batches_completed = load(batches_completed_);
        stats.items_processed = load(processed_);
        stats.items_failed = load(failed_);
        stats.batches_failed = load(batches_failed_);
        stats.items_accepted = load(sealed_items_) + open_items;
        stats.items_rejected_full = load(rejected_full_);
        stats.items_rejected_closed = load(rejected_closed_);
        stats.items_rejected_error = load(rejected_error_);
        stats.items_rejected_infeasible = load(rejected_infeasible_);
        stats.items_expired = load(expired_);
        stats.items_cancelled = load(cancelled_);
        stats.items_submitted = stats.items_accepted + stats.items_rejected();
        stats.batches_full = load(by_reason_[static_cast<std::size_t>(DispatchReason::full)]);
        stats.batches_deadline =
            load(by_reason_[static_cast<std::size_t>(DispatchReason::deadline)]);
        stats.batches_flush = load(by_reason_[static_cast<std::size_t>(DispatchReason::flush)]);
        stats.batches_close = load(by_reason_[static_cast<std::size_t>(DispatchReason::close)]);
        stats.batches_worker_free =
            load(by_reason_[static_cast<std::size_t>(DispatchReason::worker_free)]);
        stats.batches_early = load(by_reason_[static_cast<std::size_t>(DispatchReason::early)]);
        stats.batches_item_deadline =
            load(by_reason_[static_cast<std::size_t>(DispatchReason::item_deadline)]);
        // size_min_ keeps its initial maximum until a batch holding items completed; batches
        // made only of holes complete without a size sample.
        const std::int64_t size_min = load(size_min_);
        stats.batch_size_min = size_min == std::numeric_limits<std::int64_t>::max()
                                   ? 0
                                   : static_cast<std::uint64_t>(size_min);
        stats.batch_size_max = static_cast<std::uint64_t>(load(size_max_));
        for (std::size_t i = 0; i < histogram_.size(); ++i) {
            stats.batch_size_histogram[i] = load(histogram_[i]);
        }
        stats.queue_delay = queue_delay_.snapshot();
        stats.processing_time = processing_time_.snapshot();
        stats.dispatch_wait = dispatch_wait_.snapshot();
        for (std::size_t i = 0; i < LatencySummary::bucket_count; ++i) {
            stats.item_latency.buckets[i] = load(latency_buckets_[i]);
            stats.item_latency.count += stats.item_latency.buckets[i];
        }
        stats.item_latency.total = std::chrono::nanoseconds(load(latency_total_));
        stats.item_latency.max = std::chrono::nanoseconds(load(latency_max_));
        stats.callback_exceptions = load(callback_exceptions_);
        stats.items_failed_individually = load(failed_individually_);
        stats.batches_isolated = load(batches_isolated_);
        stats.isolation_runs = load(isolation_runs_);
        stats.isolation_runs_failed = load(isolation_runs_failed_);
        stats.item_cost_total = load(item_cost_total_);
        stats.batch_item_cost_max = load(item_cost_max_);
        stats.items_oversized = load(oversized_);
        std::lock_guard<std::mutex> lock(completion_mutex_);
        stats.batch_cost = batch_cost_;
    }

private:
    // The latency fields are written only here, under completion_mutex_: load and store.
    void record_latency_locked(std::int64_t nanoseconds) noexcept {
        if (nanoseconds < 0) {
            nanoseconds = 0;
        }
        add_serialised(latency_buckets_[LatencySummary::bucket_of(nanoseconds)], std::uint64_t{1});
        add_serialised(latency_total_, nanoseconds);
        raise_serialised(latency_max_, nanoseconds);
    }

    // Written by producers on the slow path only: kept off the workers' cache lines.
    alignas(cache_line_size) std::atomic<std::uint64_t> rejected_full_{0};
    std::atomic<std::uint64_t> rejected_closed_{0};
    std::atomic<std::uint64_t> rejected_error_{0};
    std::atomic<std::uint64_t> rejected_infeasible_{0};
    // Written once per batch by whoever seals it.
    alignas(cache_line_size) std::atomic<std::uint64_t> sealed_items_{0};
    std::array<std::atomic<std::uint64_t>, 7> by_reason_{};
    // Written once per batch by the worker that ran it. processed_, batches_failed_,
    // batches_completed_, the size fields, the histogram and the three DurationRecorders only
    // in completed(), under completion_mutex_ (so by load and store), and so are the latency
    // fields (also in item_latency()); the rest by RMWs.
    alignas(cache_line_size) std::atomic<std::uint64_t> processed_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<std::uint64_t> batches_failed_{0};
    std::atomic<std::uint64_t> batches_completed_{0};
    std::atomic<std::uint64_t> callback_exceptions_{0};
    std::atomic<std::uint64_t> expired_{0};
    std::atomic<std::uint64_t> cancelled_{0};
    std::atomic<std::int64_t> size_min_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> size_max_{0};
    std::array<std::atomic<std::uint64_t>, 24> histogram_{};
    DurationRecorder queue_delay_;
    DurationRecorder processing_time_;
    DurationRecorder dispatch_wait_;
    std::array<std::atomic<std::uint64_t>, LatencySummary::bucket_count> latency_buckets_{};
    std::atomic<std::int64_t> latency_total_{0};
    std::atomic<std::int64_t> latency_max_{0};
    mutable std::mutex completion_mutex_;
    CostModelFitter batch_cost_;  // guarded by completion_mutex_
    std::atomic<double> fitted_per_batch_ns_{0.0};
    std::atomic<double> fitted_per_item_ns_{0.0};
    // Per-item outcomes and isolation: written once per batch that has them, by its worker.
    std::atomic<std::uint64_t> failed_individually_{0};
    std::atomic<std::uint64_t> batches_isolated_{0};
    std::atomic<std::uint64_t> isolation_runs_{0};
    std::atomic<std::uint64_t> isolation_runs_failed_{0};
    // Item costs: written once per batch by its worker (the oversized count by producers).
    std::atomic<std::uint64_t> item_cost_total_{0};
    std::atomic<std::uint64_t> item_cost_max_{0};
    std::atomic<std::uint64_t> oversized_{0};
};

}  // namespace detail
}  // namespace microbatch
