#pragma once
/**
 * @file keyed_batcher.hpp
 * @brief `microbatch::KeyedBatcher<Key, T, R, Clock>`: batches items per key (table, tenant,
 *        model) with per-key bounds, all keys sharing one timer thread and one pool.
 */

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/deadline.hpp"
#include "microbatch/detail/keyed_batcher_core.hpp"
#include "microbatch/detail/keyed_process.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/keyed_options.hpp"
#include "microbatch/keyed_stats.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/submit_result.hpp"

namespace microbatch {

/**
 * @brief Batches items per key: items with the same key (a table, a tenant, a model) go into
 *        the same batches, never mixed with another key's; each key's batches are bounded by
 *        its own size and time bounds; all keys share one timer thread and one pool.
 *
 * @tparam Key      the key type: copyable, hashed with @p Hash, compared with @p KeyEqual.
 * @tparam T        the item type; may be move-only.
 * @tparam R        the per-item result type (`void`: success or failure only), as in Batcher.
 * @tparam Clock    `SteadyClock`, or `ManualClock` in tests (see clock.hpp).
 *
 * @code
 * microbatch::KeyedBatcher<std::string, Row> writer(
 *     microbatch::KeyedOptions{}.max_batch_size(500).max_delay(std::chrono::milliseconds(5)),
 *     [](const Row& row) { return row.table; },             // the key function (optional)
 *     [&db](const std::string& table, microbatch::Batch<Row>& rows) { db.insert(table, rows); });
 * writer.post(row);                 // keyed by the key function
 * writer.submit("audit", row);      // or name the key: returns a Handle<void>
 * @endcode
 *
 * **Batching.** A key's batch is sealed when it holds the key's `max_batch_size` items (reason
 * `full`). When its oldest item has waited the key's `max_delay` it is *due*: it is sealed
 * (reason `deadline`) as soon as a worker is free, and keeps growing (up to its bound) while
 * every worker is busy; a finishing worker then seals it (reason `worker_free`). `flush()`,
 * `wait_idle()` and `close()` seal every key's partial batch. Items of one key enter its batches
 * in acceptance order (one producer's items for one key are never reordered); `Batch::sequence()`
 * numbers batches 0, 1, 2, ... in the order they were sealed, over all keys, so a key's batches
 * carry increasing (not consecutive) numbers, also across the key's reclamation. Bounds per key:
 * `set_key_limits(key, limits)`, else the `KeyedOptions` defaults.
 *
 * **Item costs.** With a cost function (`microbatch::cost_by(f)`, before the batch function in
 * the constructor) each item has a cost (its bytes, tokens, rows), computed once on the
 * submitting thread before it is accepted (if it throws, the submit throws and nothing is
 * accepted). A key's batch is also sealed (reason `full`) when its total cost reaches the key's
 * `max_batch_cost`, or before an item that would take it above; an item costing more than the
 * bound on its own runs alone in a batch sealed at once (`KeyedStats::items_oversized`).
 * `max_pending_cost` bounds the total cost of the pending items like `capacity` bounds their
 * number (waiters admitted in arrival order); an item costing more than it throws
 * `CostLimitError` from every submit form. Without a cost function every item costs 0.
 * @code
 * microbatch::KeyedBatcher<std::string, std::string> uploads(
 *     microbatch::KeyedOptions{}.max_batch_cost(1 << 20).max_pending_cost(64 << 20),
 *     microbatch::cost_by([](const std::string& body) { return body.size(); }),
 *     [](const std::string& bucket, microbatch::Batch<std::string>& bodies) { ... });
 * @endcode
 *
 * **Dispatch and fairness.** At most `max_in_flight` batches run at once (default: the pool's
 * workers). Sealed batches beyond that wait in their key's queue, and free workers take them
 * round-robin between keys (detail/keyed_policy.hpp): with n keys waiting, each gets one batch
 * in every n, so a hot key cannot starve a quiet one. Batches of one key may run concurrently.
 * One timer thread serves every key (a min-heap of deadlines); 100 keys cost no extra thread.
 *
 * **Keys.** A key is live from its first accepted item until it is reclaimed, once it has had
 * nothing pending for `key_idle_timeout`. At most `max_keys` keys are live; a submit for a new
 * key at the cap reclaims expired idle keys first and otherwise throws `KeyLimitError` (item
 * untouched). `key_stats(key)` reports a live key's counters, `stats()` the totals.
 *
 * **Results, backpressure, errors** as in Batcher: `submit` returns a `Handle<R>`,
 * `submit(..., callback)` calls `callback(Outcome<R>&&)` on the worker (48 bytes inline),
 * `post`/`try_submit` are fire-and-forget. At most `capacity` items (all keys) are accepted and
 * unfinished: `submit`/`post` block, `try_submit` reports `full`, `submit_for` waits up to its
 * timeout. Partial batches of many keys can hold the whole capacity: when a submit finds the
 * batcher full with no batch running or waiting, every partial batch is sealed (reason `full`)
 * so that space frees up without waiting for the time bounds (or forever, without one). If
 * process_batch throws (or returns the wrong number of results: ResultCountError), every item of
 * that batch, and only of that batch, receives the exception. Callback exceptions are counted and
 * ignored.
 *
 * **Shutdown.** `close()` stops accepting (`ClosedError`; blocked producers wake with it),
 * seals every partial batch (reason `close`) and waits until every accepted item has finished.
 * Idempotent; the destructor calls it. No accepted item is lost or processed twice.
 *
 * **Re-entrancy** as in Batcher: from inside one of its batches (process_batch or a callback),
 * `close()` and `wait_idle()` throw `ReentrancyError`, and so do blocking submits that find it
 * full.
 *
 * **Design and cost.** Unlike Batcher's lock-free single-key path, a KeyedBatcher keeps its
 * state under one mutex: a submit takes it once (hash lookup, append to the key's batch); a
 * batch takes it once when it finishes (its counters are atomic). User code never runs under
 * it (process_batch, callbacks, the key and cost functions and the executor run outside), except
 * the key's hash and equality and the item's constructors (from the submitted argument, and moves
 * while a batch's storage grows), which must not call back into this batcher. A worker that
 * finishes a batch takes the next one itself (up to 16 in a row, then it hands the next to the
 * executor and returns the thread to the pool). Measured (bench_keyed, two producers, shared
 * ThreadPool(2), README "Keyed batching"): about 0.5x the throughput of one Batcher at one key,
 * about 1x as many Batchers at 10 keys, 1.4-2.3x at 100; for one hot stream use Batcher.
 *
 * Thread safety: every member function may be called concurrently from any thread, except that
 * the destructor must not run concurrently with calls that are not blocked inside the batcher.
 */
template <class Key, class T, class R = void, class Clock = SteadyClock,
          class Hash = std::hash<Key>, class KeyEqual = std::equal_to<Key>>
class KeyedBatcher : private detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual> {
    // The state and machinery: detail/keyed_batcher_core.hpp. This class adds the documented API.
    using Core = detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>;
    static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                  "microbatch::KeyedBatcher: T must be a non-const object type");
    static_assert(std::is_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                  "microbatch::KeyedBatcher: T must be move constructible and nothrow "
                  "destructible");
    static_assert(std::is_copy_constructible_v<Key>,
                  "microbatch::KeyedBatcher: Key must be copy constructible");

    template <class F>
    static constexpr bool is_callback = Core::template is_callback<F>;
    template <class U>
    static constexpr bool is_item = std::is_constructible_v<T, U&&>;
    template <class K, class U>
    static constexpr bool is_key_item =
        is_item<U> && !is_callback<U> && std::is_constructible_v<Key, K&&>;

public:
    using key_type = Key;      ///< The key type.
    using item_type = T;       ///< The item type.
    using result_type = R;     ///< The per-item result type.
    using clock_type = Clock;  ///< The clock the time bounds are measured with.
    /// What process_batch returns: `std::vector<R>`, or nothing for `R = void`.
    using batch_result_type = typename Core::batch_result_type;
    /// The stored batch function: called with the batch's key and the batch.
    using process_function = typename Core::process_function;
    /// The stored key function.
    using key_function = typename Core::key_function;
    /// The stored cost function (`cost_by`).
    using cost_function = typename Core::cost_function;

    /**
     * @brief Creates the batcher without a key function (submits name the key), starts its
     *        timer thread and, without an executor, its own pool of `workers` threads.
     * @param options  validated here: `std::invalid_argument` naming the option and its value.
     * @param process  called as `process(key, batch)` or `process(batch)` with a `Batch<T>&`;
     *                 returns `std::vector<R>` (one result per item) or, for `R = void`, nothing.
     * @param clock    the clock instance (a `ManualClock` handle in tests).
     * @throws std::invalid_argument on invalid options; `std::bad_alloc`, `std::system_error`.
     */
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, KeyedBatcher>>>
    KeyedBatcher(KeyedOptions options, F&& process, Clock clock = Clock{})
        : Core(std::move(options), std::move(clock)) {
        Core::process_ = detail::wrap_keyed_process<Key, T, R>(std::forward<F>(process));
        Core::initialise();
    }

    /**
     * @brief Like the constructor above, with a key function: `key_of(item)` returns the key
     *        of items submitted without one (`submit(item)`, `post(item)`, ...). It runs on the
     *        submitting thread, outside the batcher's mutex.
     */
    template <
        class KeyOf, class F,
        class = std::enable_if_t<!detail::is_keyed_cost_by<std::decay_t<KeyOf>>::value &&
                                 (std::is_invocable_v<std::decay_t<F>&, const Key&, Batch<T>&> ||
                                  std::is_invocable_v<std::decay_t<F>&, Batch<T>&>)>>
    KeyedBatcher(KeyedOptions options, KeyOf&& key_of, F&& process, Clock clock = Clock{})
        : Core(std::move(options), std::move(clock)) {
        Core::key_of_ = detail::keyed_key_function<Key, T>(std::forward<KeyOf>(key_of));
        Core::process_ = detail::wrap_keyed_process<Key, T, R>(std::forward<F>(process));
        Core::initialise();
    }

    /**
     * @brief Like the first constructor, with a cost function (`microbatch::cost_by(f)`):
     *        `f(item)` returns the item's cost as a `std::size_t`, weighed against
     *        `max_batch_cost` and `max_pending_cost`. It runs once per item on the submitting
     *        thread, outside the batcher's mutex, before the item is accepted.
     * @throws std::invalid_argument on invalid options; `std::bad_alloc`, `std::system_error`.
     */
    template <
        class C, class F,
        class = std::enable_if_t<std::is_invocable_v<std::decay_t<F>&, const Key&, Batch<T>&> ||
                                 std::is_invocable_v<std::decay_t<F>&, Batch<T>&>>>
    KeyedBatcher(KeyedOptions options, CostBy<C> cost, F&& process, Clock clock = Clock{})
        : Core(std::move(options), std::move(clock)) {
        Core::cost_of_ = detail::keyed_cost_function<T>(std::move(cost));
        Core::process_ = detail::wrap_keyed_process<Key, T, R>(std::forward<F>(process));
        Core::initialise();
    }

    /**
     * @brief With a key function and a cost function: `key_of(item)` as in the constructor
     *        with a key function, `cost` as in the constructor with a cost function.
     * @throws std::invalid_argument on invalid options; `std::bad_alloc`, `std::system_error`.
     */
    template <
        class KeyOf, class C, class F,
        class = std::enable_if_t<std::is_invocable_v<std::decay_t<F>&, const Key&, Batch<T>&> ||
                                 std::is_invocable_v<std::decay_t<F>&, Batch<T>&>>>
    KeyedBatcher(KeyedOptions options, KeyOf&& key_of, CostBy<C> cost, F&& process,
                 Clock clock = Clock{})
        : Core(std::move(options), std::move(clock)) {
        Core::key_of_ = detail::keyed_key_function<Key, T>(std::forward<KeyOf>(key_of));
        Core::cost_of_ = detail::keyed_cost_function<T>(std::move(cost));
        Core::process_ = detail::wrap_keyed_process<Key, T, R>(std::forward<F>(process));
        Core::initialise();
    }

    KeyedBatcher(const KeyedBatcher&) = delete;
    KeyedBatcher& operator=(const KeyedBatcher&) = delete;

    /// @brief Calls `close()`: processes everything accepted, then releases the threads.
    ~KeyedBatcher() { Core::destroy(); }

    // ---- Submitting with an explicit key ----------------------------------------------------

    /**
     * @brief Submits @p item under @p key and returns a handle to its result. Blocks while the
     *        batcher is full.
     * @throws ClosedError if closed (also when it closes while blocked); KeyLimitError at the
     *         key cap; CostLimitError if the item's cost exceeds `max_pending_cost` (every
     *         form, the non-blocking ones too); ReentrancyError if it would block inside one of
     *         its own batches; whatever constructing `Key` or `T` or the cost function throws;
     *         `std::bad_alloc`.
     */
    template <class K, class U, std::enable_if_t<is_key_item<K, U>, int> = 0>
    Handle<R> submit(K&& key, U&& item) {
        Handle<R> handle;
        Core::throw_if_closed(Core::with_handle(Key(std::forward<K>(key)), std::forward<U>(item),
                                                Core::wait_forever, {}, handle));
        return handle;
    }

    /// @brief Submits @p item under @p key; `callback(Outcome<R>&&)` runs on a worker after its
    ///        batch ran (never if this call throws). Blocks while full. @throws as submit(key,
    ///        item).
    template <class K, class U, class F,
              std::enable_if_t<is_key_item<K, U> && is_callback<F>, int> = 0>
    void submit(K&& key, U&& item, F&& callback) {
        Core::throw_if_closed(Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item),
                                                Core::wait_forever, {},
                                                Core::template emplacer<F>(callback)));
    }

    /// @brief Fire-and-forget under @p key. Blocks while full. @throws as submit(key, item).
    template <class K, class U, std::enable_if_t<is_key_item<K, U>, int> = 0>
    void post(K&& key, U&& item) {
        Core::throw_if_closed(Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item),
                                                Core::wait_forever, {}, Core::no_completion));
    }

    /**
     * @brief Fire-and-forget without blocking: `accepted`, or `full`/`closed` at once (the item
     *        is then left untouched).
     * @throws KeyLimitError at the key cap; CostLimitError if the item's cost exceeds
     *         `max_pending_cost`; whatever constructing `Key` or `T` or the cost function throws.
     */
    template <class K, class U, std::enable_if_t<is_key_item<K, U>, int> = 0>
    [[nodiscard]] SubmitStatus try_submit(K&& key, U&& item) {
        return Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item), Core::wait_never,
                                 {}, Core::no_completion);
    }

    /// @brief Like try_submit(key, item), with a callback invoked only if accepted.
    template <class K, class U, class F,
              std::enable_if_t<is_key_item<K, U> && is_callback<F>, int> = 0>
    [[nodiscard]] SubmitStatus try_submit(K&& key, U&& item, F&& callback) {
        return Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item), Core::wait_never,
                                 {}, Core::template emplacer<F>(callback));
    }

    /// @brief Like try_submit(key, item), returning the status and (when accepted) the handle.
    template <class K, class U, std::enable_if_t<is_key_item<K, U>, int> = 0>
    [[nodiscard]] SubmitResult<R> try_submit_handle(K&& key, U&& item) {
        SubmitResult<R> result;
        result.status = Core::with_handle(Key(std::forward<K>(key)), std::forward<U>(item),
                                          Core::wait_never, {}, result.handle);
        return result;
    }

    /// @brief Fire-and-forget under @p key, waiting at most @p timeout for space: `accepted`,
    ///        `full` (timed out) or `closed`. @throws as submit(key, item).
    template <class K, class U, class Rep, class Period,
              std::enable_if_t<is_key_item<K, U>, int> = 0>
    [[nodiscard]] SubmitStatus submit_for(K&& key, U&& item,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item),
                                 Core::wait_until_deadline, detail::steady_deadline_after(timeout),
                                 Core::no_completion);
    }

    /// @brief Like submit_for(key, item, timeout), with a callback invoked only if accepted.
    template <class K, class U, class F, class Rep, class Period,
              std::enable_if_t<is_key_item<K, U> && is_callback<F>, int> = 0>
    [[nodiscard]] SubmitStatus submit_for(K&& key, U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_core(Key(std::forward<K>(key)), std::forward<U>(item),
                                 Core::wait_until_deadline, detail::steady_deadline_after(timeout),
                                 Core::template emplacer<F>(callback));
    }

    /// @brief Like submit_for(key, item, timeout), returning the status and the handle.
    template <class K, class U, class Rep, class Period,
              std::enable_if_t<is_key_item<K, U>, int> = 0>
    [[nodiscard]] SubmitResult<R> submit_for_handle(
        K&& key, U&& item, const std::chrono::duration<Rep, Period>& timeout) {
        SubmitResult<R> result;
        result.status = Core::with_handle(Key(std::forward<K>(key)), std::forward<U>(item),
                                          Core::wait_until_deadline,
                                          detail::steady_deadline_after(timeout), result.handle);
        return result;
    }

    // ---- Submitting with the key function ---------------------------------------------------
    // Each takes the key from key_of(item); without a key function they throw microbatch::Error.

    /// @brief submit(key_of(item), item). @throws Error without a key function; as submit(key,
    /// item).
    template <class U, std::enable_if_t<is_item<U>, int> = 0>
    Handle<R> submit(U&& item) {
        Handle<R> handle;
        Core::throw_if_closed(Core::with_handle(Core::key_for(item), std::forward<U>(item),
                                                Core::wait_forever, {}, handle));
        return handle;
    }
    /// @brief submit(key_of(item), item, callback).
    template <class U, class F, std::enable_if_t<is_item<U> && is_callback<F>, int> = 0>
    void submit(U&& item, F&& callback) {
        Core::throw_if_closed(Core::submit_core(Core::key_for(item), std::forward<U>(item),
                                                Core::wait_forever, {},
                                                Core::template emplacer<F>(callback)));
    }
    /// @brief post(key_of(item), item).
    template <class U, std::enable_if_t<is_item<U>, int> = 0>
    void post(U&& item) {
        Core::throw_if_closed(Core::submit_core(Core::key_for(item), std::forward<U>(item),
                                                Core::wait_forever, {}, Core::no_completion));
    }
    /// @brief try_submit(key_of(item), item).
    template <class U, std::enable_if_t<is_item<U>, int> = 0>
    [[nodiscard]] SubmitStatus try_submit(U&& item) {
        return Core::submit_core(Core::key_for(item), std::forward<U>(item), Core::wait_never, {},
                                 Core::no_completion);
    }
    /// @brief try_submit(key_of(item), item, callback).
    template <class U, class F, std::enable_if_t<is_item<U> && is_callback<F>, int> = 0>
    [[nodiscard]] SubmitStatus try_submit(U&& item, F&& callback) {
        return Core::submit_core(Core::key_for(item), std::forward<U>(item), Core::wait_never, {},
                                 Core::template emplacer<F>(callback));
    }
    /// @brief try_submit_handle(key_of(item), item).
    template <class U, std::enable_if_t<is_item<U>, int> = 0>
    [[nodiscard]] SubmitResult<R> try_submit_handle(U&& item) {
        SubmitResult<R> result;
        result.status = Core::with_handle(Core::key_for(item), std::forward<U>(item),
                                          Core::wait_never, {}, result.handle);
        return result;
    }
    /// @brief submit_for(key_of(item), item, timeout).
    template <class U, class Rep, class Period, std::enable_if_t<is_item<U>, int> = 0>
    [[nodiscard]] SubmitStatus submit_for(U&& item,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_core(Core::key_for(item), std::forward<U>(item),
                                 Core::wait_until_deadline, detail::steady_deadline_after(timeout),
                                 Core::no_completion);
    }
    /// @brief submit_for(key_of(item), item, callback, timeout).
    template <class U, class F, class Rep, class Period,
              std::enable_if_t<is_item<U> && is_callback<F>, int> = 0>
    [[nodiscard]] SubmitStatus submit_for(U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_core(Core::key_for(item), std::forward<U>(item),
                                 Core::wait_until_deadline, detail::steady_deadline_after(timeout),
                                 Core::template emplacer<F>(callback));
    }
    /// @brief submit_for_handle(key_of(item), item, timeout).
    template <class U, class Rep, class Period, std::enable_if_t<is_item<U>, int> = 0>
    [[nodiscard]] SubmitResult<R> submit_for_handle(
        U&& item, const std::chrono::duration<Rep, Period>& timeout) {
        SubmitResult<R> result;
        result.status =
            Core::with_handle(Core::key_for(item), std::forward<U>(item), Core::wait_until_deadline,
                              detail::steady_deadline_after(timeout), result.handle);
        return result;
    }

    // ---- Control ----------------------------------------------------------------------------

    /// @brief Seals every key's partial batch (reason `flush`); they run as workers free up.
    ///        Never blocks beyond handing batches to the executor. O(live keys).
    void flush() { Core::flush(); }
    /// @brief Seals @p key's partial batch, if it has one (reason `flush`).
    void flush(const Key& key) { Core::flush(key); }
    /**
     * @brief Flushes, then blocks until every item accepted before the call has finished (its
     *        batch ran and its handle or callback completed).
     * @throws ReentrancyError from inside one of this batcher's batches.
     */
    void wait_idle() { Core::wait_idle(); }
    /**
     * @brief Stops accepting items, seals every partial batch (reason `close`) and blocks until
     *        every accepted item has finished; then stops the timer. Idempotent; concurrent
     *        calls all wait. @throws ReentrancyError from inside one of this batcher's batches.
     */
    void close() { Core::close(); }
    /// @brief True once close() has begun.
    bool is_closed() const { return Core::is_closed(); }

    /**
     * @brief Overrides the bounds of @p key (also before it is live, and across reclamation)
     *        for batches opened from now on; an empty field restores the default.
     * @throws std::invalid_argument naming the field and value: a size outside
     *         [1, max_supported_batch_size] or above the capacity, a negative delay.
     */
    void set_key_limits(const Key& key, const KeyLimits& limits) {
        Core::set_key_limits(key, limits);
    }
    /// @brief Removes @p key's overrides: its next batches use the defaults.
    void clear_key_limits(const Key& key) { Core::clear_key_limits(key); }

    /// @brief A consistent snapshot of the totals (taken under the mutex). O(1).
    KeyedStats stats() const { return Core::stats(); }
    /// @brief The counters of @p key, or nothing if it is not live. O(1) expected.
    std::optional<KeyStats> key_stats(const Key& key) const { return Core::key_stats(key); }
    /// @brief Keys live now.
    std::size_t live_keys() const { return Core::live_keys(); }
    /// @brief Items accepted and not finished (all keys).
    std::size_t pending() const { return Core::pending(); }
    /// @brief Total cost of the items accepted and not finished (all keys), the quantity
    ///        `max_pending_cost` bounds; 0 without a cost function. Takes the mutex; O(1).
    std::size_t pending_cost() const { return Core::pending_cost(); }
    /// @brief Batches running now (the count max_in_flight limits).
    std::size_t in_flight() const { return Core::in_flight(); }

    /// @brief The options the batcher was built with.
    const KeyedOptions& options() const noexcept { return Core::options_; }
    /// @brief The clock the batcher measures time bounds with.
    const Clock& clock() const noexcept { return Core::clock_; }
};

}  // namespace microbatch
