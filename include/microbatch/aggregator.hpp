#pragma once
/**
 * @file aggregator.hpp
 * @brief `microbatch::Aggregator`: a sharded, lock-free reducing accumulator that many threads
 *        merge per-batch results into. Its ready-made operations, `microbatch::ops`, are in
 *        aggregation_ops.hpp (included here).
 */

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "microbatch/aggregation_ops.hpp"
#include "microbatch/detail/aggregator_shards.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief Run-time configuration of an `Aggregator`: a plain value with fluent setters.
 *
 * | option   | default | meaning                                                          |
 * |----------|---------|------------------------------------------------------------------|
 * | `shards` | 0 = hardware threads | number of cache-line shards, rounded up to a power of two |
 *
 * Thread safety: a plain value type; no internal synchronisation.
 */
class AggregatorOptions {
public:
    /// Largest shard count accepted.
    static constexpr std::size_t max_shards = detail::aggregator_max_shards;

    /// @brief Requested shard count; 0 means `std::thread::hardware_concurrency()`.
    std::size_t shards() const noexcept { return shards_; }
    /// @brief Sets the shard count; must be at most `max_shards`. Rounded up to a power of two.
    AggregatorOptions& shards(std::size_t value) noexcept {
        shards_ = value;
        return *this;
    }

    /// @brief Throws `std::invalid_argument` naming the option if a setting is out of range.
    void validate() const {
        if (shards_ > max_shards) {
            MICROBATCH_THROW(std::invalid_argument(
                "microbatch::AggregatorOptions: shards must be at most " +
                std::to_string(max_shards) + " (got " + std::to_string(shards_) + ")"));
        }
    }

private:
    std::size_t shards_ = 0;
};

namespace detail {

template <class Op>
using aggregation_identity_t = decltype(std::declval<const Op&>().identity());

template <class Op>
using aggregation_combine_t = decltype(std::declval<const Op&>().combine(
    std::declval<typename Op::value_type&>(), std::declval<typename Op::value_type&&>()));

/// Whether `Op` meets the requirements of an aggregation operation (see `microbatch::ops`).
template <class Op, class = void>
struct is_aggregation_op : std::false_type {};

template <class Op>
struct is_aggregation_op<
    Op, std::void_t<typename Op::value_type, aggregation_identity_t<Op>, aggregation_combine_t<Op>>>
    : std::is_convertible<aggregation_identity_t<Op>, typename Op::value_type> {};

/// Whether `op.combine(value_type&, const value_type&)` is valid, so merging an lvalue needs
/// no copy.
template <class Op, class = void>
struct combines_const_lvalues : std::false_type {};

template <class Op>
struct combines_const_lvalues<Op, std::void_t<decltype(std::declval<const Op&>().combine(
                                      std::declval<typename Op::value_type&>(),
                                      std::declval<const typename Op::value_type&>()))>>
    : std::true_type {};

}  // namespace detail

/**
 * @brief A reducing accumulator that many threads merge values into concurrently, without a
 *        lock on the merge path, and that readers combine on demand.
 *
 * Each merge goes to one of N cache-line-aligned shards, picked by a per-thread number, so
 * threads merging at once normally touch different cache lines; `value()` and `take()` combine
 * the shards. Two storage layouts are chosen at compile time (see `is_atomic_backed`):
 *
 * - **Atomic shards** (`is_atomic_backed`): small trivially copyable values whose
 *   `std::atomic` is lock-free (integers, `double`, ...). A merge is one atomic read-modify-write
 *   on the shard: wait-free with `fetch_add` (`Sum`, `Count` of integers), lock-free with a CAS
 *   loop (`Min`, `Max`, floating-point `Sum`, custom operations). Never allocates.
 * - **Node shards**: anything else (`std::map`, `std::vector`, `RunningStats`, move-only types).
 *   A merge takes the shard's node by pointer exchange, combines into it in place and puts it
 *   back: lock-free. It allocates (one node) only when every probed shard is held at that
 *   instant.
 *
 * Node shards: a merge that finds a shard's node held by another thread moves on to the next
 * shard, and after a few tries pushes its value onto a lock-free stack that the next holder
 * folds in; it never waits. The progress guarantees exclude what `Op::combine`, the value's
 * copy/move and the allocator do themselves (a `std::map` insert calls `operator new`), and
 * a thread's very first merge: it takes the thread's shard number from a bitmap (lock-free CAS)
 * and registers a thread-exit hook that gives it back (the C++ runtime may allocate for that
 * once per thread).
 *
 * `Op`'s member functions must not call back into the same aggregator: a `value()` or `take()`
 * from inside `combine` would wait for the node its own merge is holding.
 *
 * What a concurrent read sees: every merge that happened-before the read (e.g. on a joined
 * thread) is included; a merge concurrent with the read is either wholly included or wholly
 * absent — shard values are never torn. Shards are read one after another, so the result is
 * not a single-instant snapshot across shards.
 *
 * @tparam Op the operation: one from `microbatch::ops` or your own (see `microbatch::ops`).
 * @code
 * microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>> total;
 * // in each batch, on any thread:
 * total.merge(batch_sum);
 * // once a second, on a reporting thread:
 * std::int64_t last_second = total.take();
 * @endcode
 * Thread-safe: every member function may be called concurrently from any thread, except that
 * construction and destruction must not overlap any other call.
 */
template <class Op>
class Aggregator {
    static_assert(detail::is_aggregation_op<Op>::value,
                  "microbatch::Aggregator<Op>: Op needs value_type, identity() const and "
                  "combine(value_type&, value_type&&) const");

public:
    /// The operation type.
    using operation_type = Op;
    /// The accumulated (and merged) value type.
    using value_type = typename Op::value_type;

    /// True when shards are `std::atomic<value_type>`: allocation-free merges, wait-free or
    /// lock-free as described above. False: node shards.
    static constexpr bool is_atomic_backed = detail::is_atomic_backed<value_type>::value;

    /// @brief An aggregator with default options and a default-constructed operation.
    Aggregator() : Aggregator(AggregatorOptions{}) {}

    /**
     * @brief Creates an aggregator holding `op.identity()`.
     * @param options validated here: throws `std::invalid_argument` when out of range.
     * @param op the operation; a stateful operation's state is shared by all merges.
     *
     * Allocates the shards (and, for node shards, one node each); throws `std::bad_alloc` or
     * what `Op::identity` throws. O(shards).
     */
    explicit Aggregator(const AggregatorOptions& options, Op op = Op{})
        : op_(std::move(op)), shards_(op_, shard_count_for(options)) {}

    /// @brief Same as `Aggregator(AggregatorOptions{}, std::move(op))`.
    explicit Aggregator(Op op) : Aggregator(AggregatorOptions{}, std::move(op)) {}

    Aggregator(const Aggregator&) = delete;
    Aggregator& operator=(const Aggregator&) = delete;

    /// @brief Destroys the value and any recorded exception. No other call may be running.
    ~Aggregator() {
        // relaxed: destruction is exclusive, no other thread uses the aggregator any more.
        delete first_error_.load(std::memory_order_relaxed);
    }

    /**
     * @brief Folds @p value into the aggregate.
     *
     * Never blocks. Atomic-backed: one atomic read-modify-write, wait-free or lock-free, never
     * allocates, never throws for the ready-made operations. Node shards: lock-free, combines
     * into a shard's node in place (allocating one node only if every probed shard is busy).
     * Throws what `Op::combine`, the value's copy/move or allocation throw; the merge that threw
     * may then be partly applied or lost, every other merge is kept, and the aggregator stays
     * usable. O(1) plus one combine (node shards: plus folding any values left by busy merges).
     *
     * Thread-safe: may be called concurrently from any thread.
     */
    void merge(const value_type& value) {
        if constexpr (is_atomic_backed || detail::combines_const_lvalues<Op>::value) {
            shards_.merge(op_, value);
        } else {
            shards_.merge(op_, value_type(value));  // combine wants an rvalue: copy first
        }
    }

    /// @brief Same as `merge(const value_type&)`, moving @p value into node shards.
    void merge(value_type&& value) { shards_.merge(op_, std::move(value)); }

    /**
     * @brief Returns the combination of every merge so far (since the last `take()`).
     *
     * Includes every merge that happened-before this call; concurrent merges are included
     * whole or not at all. Atomic-backed: wait-free, one load per shard. Node shards:
     * blocking — waits, per shard, for merges already holding that shard's node to finish (at
     * most one combine each; merges starting afterwards do not delay it); copies each shard's
     * value, so `value_type` must be copyable. O(shards) combines.
     * Throws what `Op::identity`, `Op::combine` or the copy throw.
     *
     * Thread-safe: may be called concurrently from any thread.
     */
    value_type value() const { return shards_.value(op_); }

    /**
     * @brief Returns the combination of every merge since the last `take()` and resets the
     *        aggregate to the identity, for per-window reporting.
     *
     * Exactly once: every merge, even one racing with this call, lands either in the returned
     * value or in the aggregate left behind (the next window) — never both, never neither.
     * Every merge that happened-before the call is in the returned value. Progress as for
     * `value()`; works for move-only `value_type`. O(shards) combines.
     * If `Op::combine` throws while combining the taken shards, the value taken so far is lost
     * (basic guarantee).
     *
     * Thread-safe: may be called concurrently from any thread (concurrent takes split the
     * merges between them).
     */
    value_type take() { return shards_.take(op_); }

    /**
     * @brief Records a failed batch: counts it and keeps @p error if it is the first.
     *
     * The first non-null exception recorded is kept until the aggregator is destroyed (later
     * ones are only counted); a null @p error is counted but not kept. `take()` resets neither.
     * Wait-free apart from one `operator new` on the first call that stores an exception: one
     * `fetch_add` and at most one CAS. If that allocation fails, the failure is still counted.
     *
     * Thread-safe: may be called concurrently from any thread.
     */
    void record_failure(std::exception_ptr error) noexcept {
        // relaxed: the count publishes nothing; the release CAS below orders it before the
        // exception pointer, so a reader that sees the exception also sees the count.
        failures_.fetch_add(1, std::memory_order_relaxed);
        // relaxed: a cheap check whether a first exception is already kept; not dereferenced.
        if (!error || first_error_.load(std::memory_order_relaxed) != nullptr) {
            return;
        }
        auto* stored = new (std::nothrow) std::exception_ptr(std::move(error));
        if (stored == nullptr) {
            return;
        }
        std::exception_ptr* expected = nullptr;
        // release on success: publishes *stored to first_exception()'s acquire load. relaxed
        // on failure: another exception came first; we only delete ours.
        if (!first_error_.compare_exchange_strong(expected, stored, std::memory_order_release,
                                                  std::memory_order_relaxed)) {
            delete stored;
        }
    }

    /**
     * @brief Number of `record_failure` calls so far. Wait-free, O(1).
     *
     * If `first_exception()` returned non-null, a later `failures()` on the same thread is at
     * least 1. Thread-safe: may be called concurrently from any thread.
     */
    std::uint64_t failures() const noexcept {
        // relaxed: a statistic; ordering with first_exception() comes from that acquire load.
        return failures_.load(std::memory_order_relaxed);
    }

    /**
     * @brief The first exception recorded by `record_failure`, or null if none was.
     *
     * Once non-null it never changes. Wait-free, O(1), never throws.
     * Thread-safe: may be called concurrently from any thread.
     */
    std::exception_ptr first_exception() const noexcept {
        // acquire: pairs with record_failure's release CAS, so the exception_ptr is complete.
        const std::exception_ptr* stored = first_error_.load(std::memory_order_acquire);
        return stored == nullptr ? std::exception_ptr() : *stored;
    }

    /// @brief The number of shards (a power of two). Thread-safe, O(1).
    std::size_t shard_count() const noexcept { return shards_.size(); }

    /// @brief The operation merges are combined with. Thread-safe, O(1).
    const Op& operation() const noexcept { return op_; }

private:
    using Storage =
        std::conditional_t<is_atomic_backed, detail::AtomicShards<Op>, detail::NodeShards<Op>>;

    static std::size_t shard_count_for(const AggregatorOptions& options) {
        options.validate();
        return options.shards() == 0 ? detail::aggregator_default_shards()
                                     : detail::aggregator_round_up_pow2(options.shards());
    }

    Op op_;
    Storage shards_;
    // alignas: failures are rare writes; keep them off the line holding the shard pointer and
    // mask, which every merge reads.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::exception_ptr*> first_error_{nullptr};
};

}  // namespace microbatch
