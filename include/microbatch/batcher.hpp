#pragma once
/**
 * @file batcher.hpp
 * @brief `microbatch::Batcher<T, R, Clock>`: groups submitted items into size- and
 *        time-bounded microbatches and runs a user function on each batch in a thread pool.
 */

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/detail/admission_queue.hpp"
#include "microbatch/detail/batcher_ring.hpp"
#include "microbatch/detail/batcher_slots.hpp"
#include "microbatch/detail/completion.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/stats_recorder.hpp"
#include "microbatch/detail/unique_function.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/item_deadline.hpp"
#include "microbatch/options.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/seal_policy.hpp"
#include "microbatch/stats.hpp"
#include "microbatch/submit_result.hpp"
#include "microbatch/thread_pool.hpp"

namespace microbatch {

namespace detail {
template <class R>
struct BatchOutcomes;  // detail/batcher_outcomes.hpp
}  // namespace detail

/**
 * @brief What `Batcher::close_for` reports.
 */
struct CloseResult {
    bool completed = true;            ///< True if every accepted item finished before the timeout.
    std::size_t items_in_flight = 0;  ///< Accepted items not yet finished when it gave up.
    std::size_t batches_in_flight = 0;  ///< Batches not yet finished when it gave up.
};

/**
 * @brief Accumulates items into microbatches bounded by size (`max_batch_size`) and time
 *        (`max_delay`), and runs `process_batch` on each batch in a thread pool.
 *
 * @tparam T     the item type; may be move-only (e.g. `std::unique_ptr`).
 * @tparam R     the per-item result type: `process_batch` returns `std::vector<R>` with one
 *               result per item, in item order. With `R = void` (the default) it returns
 *               nothing and items only report success or failure. Either way it may return
 *               one `Outcome<R>` per item instead (`outcome_result_type`).
 * @tparam Clock the clock `max_delay` is measured with (`SteadyClock`, or `ManualClock` in
 *               tests; see clock.hpp for the requirements).
 *
 * @code
 * microbatch::Batcher<int, int> doubler(
 *     microbatch::Options{}.max_batch_size(3).max_delay(std::chrono::milliseconds(5)).workers(2),
 *     [](microbatch::Batch<int>& batch) {
 *         std::vector<int> out;
 *         for (int x : batch) out.push_back(2 * x);
 *         return out;
 *     });
 * auto handle = doubler.submit(21);  // handle.get() == 42
 * doubler.close();                   // dispatches the partial batch, waits, loses nothing
 * @endcode
 *
 * **Batching.** A batch is dispatched when it holds `max_batch_size` items (reason `full`),
 * when its oldest item has waited `max_delay` (`deadline`), on `flush()`/`wait_idle()`
 * (`flush`) or on `close()`/destruction (`close`). Items enter batches in the order they were
 * accepted: one producer's items are never reordered, within or across batches. Batches run
 * concurrently on the workers, so batches may *finish* out of order.
 *
 * **Submitting.** Three ways to learn an item's outcome: `submit(item)` returns a `Handle`
 * (future-like; its state comes from a per-thread pool, so the steady state allocates nothing,
 * see detail/handle_state.hpp); `submit(item, callback)` calls `callback(Outcome<R>&&)`
 * on the worker after the batch ran (no allocation: the callback is stored inline in the batch
 * slot, so it must be callable as `void(microbatch::Outcome<R>&&)`, fit 48 bytes
 * (`detail::Completion<R>::inline_size`) and be nothrow move-constructible, all checked at
 * compile time); `post(item)` and `try_submit(item)` are fire-and-forget;
 * `try_submit_handle(item)` and `submit_for_handle(item, timeout)` return the status together
 * with the handle. Items are taken by forwarding reference and moved from
 * only when accepted: a rejected item is left as it was.
 *
 * **Backpressure.** At most `capacity` items (ceil(capacity / lanes) per lane) are accepted and
 * not yet finished, counted in items whatever the batch sizes. When a producer's lane is full,
 * `submit`/`post` block, `try_submit` returns `SubmitStatus::full` at once, `submit_for` waits
 * up to its timeout. Blocked producers are admitted in arrival order (detail/admission_queue.hpp).
 *
 * **Deadlines** (README "Deadlines"). Every submit form has a variant taking an item deadline
 * first; an item past its deadline when its batch starts never reaches process_batch and
 * completes with `DeadlineExceeded`; `Handle::cancel()` withdraws an item before its batch
 * starts; `Options::admission_control` refuses items predicted to finish late.
 *
 * **Forming batches under load** (seal_policy.hpp has the exact rules). While
 * `max_in_flight` batches are running (default: one per worker), a partial batch is not
 * sealed by its time bound: it keeps growing until it is full, and the worker that finishes a
 * batch seals it at once (reason `worker_free`). While a worker is free, a partial batch is
 * sealed at `max_delay`, or earlier (reason `early`, `Options::seal_early`) when it already
 * holds as many items as arrive while one batch runs (from the measured arrival rate and the
 * online cost fit), or when no item arrived for several mean gaps. `max_delay(0)` seals as soon
 * as a worker can take the batch. `set_max_batch_size`, `set_max_delay` and
 * `set_max_in_flight` change the rules at run time.
 *
 * **Lanes.** With `Options::lanes(n)`, the batcher fills n batches side by side, one per lane,
 * and each producer thread always submits to the same lane; producers on different lanes never
 * touch the same atomic word. Batches never mix lanes. With the default of one lane, every item
 * of every producer goes through one sequence of batches.
 *
 * **Errors.** If `process_batch` throws, or returns a vector of the wrong length
 * (`ResultCountError`), every item of that batch receives the exception through its handle or
 * callback, the stats count it, and the batcher carries on. Exceptions thrown by callbacks are
 * caught, counted in `Stats::callback_exceptions` and otherwise ignored. If constructing `T` from
 * the submitted argument throws, the exception propagates out of the submit call and the item is
 * not accepted; the slot it had claimed stays in its batch as a *hole*. A batch with holes is
 * dispatched like any other (as `full` once all its slots are claimed) and reaches
 * process_batch with only its items, so a `full` batch may hold fewer than max_batch_size; a
 * batch made only of holes never reaches process_batch, which then sees a gap in
 * `Batch::sequence()` numbers. All items of a failed batch share one exception object (see
 * README "Reliability" on ThreadSanitizer). Per item instead: return `outcome_result_type`, or
 * let `Options::isolate_failures` re-run a failed batch in halves to fail only its poison items.
 *
 * **Shutdown.** `close()` stops accepting (later submits fail with `ClosedError`, and producers
 * blocked on a full batcher wake with it), dispatches the partial batch, and waits for every
 * accepted item to finish. It is idempotent and thread-safe; the destructor calls it.
 * No accepted item is lost or processed twice.
 *
 * **Re-entrancy.** Inside a batch of this batcher (its process_batch or an item's callback),
 * `close()`, `close_for()` and `wait_idle()` throw `ReentrancyError` (they would wait for that
 * very batch), and so do `submit`, `post` and `submit_for` when they find the batcher full (they
 * could wait for it) — `submit_for` whatever its timeout, even zero: use `try_submit`, which never
 * waits. `flush()` and submits that find room work. Nesting is tracked: each thread keeps the
 * chain of batches it is running, so when batcher A's batch runs batcher B's batch on the same
 * thread (B's executor runs tasks inline or refused the batch) and B's batch calls
 * `A.wait_idle()`, `A.close()` or a blocking submit on a full A, that throws `ReentrancyError` too.
 *
 * **Not detected — deadlock:** waiting, from inside a batch, for *another* batcher whose batches
 * need the very thread that batch runs on. Example: A and B share a one-thread pool, and A's
 * process_batch calls `B.close()`, `B.wait_idle()` or a blocking submit to a full B; B's batches
 * are queued behind A's batch on the only worker and never run (with n workers, the same happens
 * once n such batches run at once). The batcher cannot tell whether an executor has another
 * thread free, so it does not try. From inside a batch, wait only on batchers whose executor is
 * not the one running the batch (e.g. a batcher with its own pool), or use `flush()` and
 * `try_submit()`, which never wait.
 *
 * **Performance.** The submit fast path is one atomic fetch-add on the lane's word plus writing
 * the item into its slot of a preallocated batch buffer: no mutex, no allocation (in handle
 * mode, one block of handle states per 32 items when handles are not released on the submitting
 * thread). Buffers are reused; the timer thread sleeps until the next deadline
 * or new work and never polls.
 *
 * Thread safety: every member function may be called concurrently from any thread, except that
 * the destructor must not run concurrently with calls that are not blocked inside the batcher.
 */
template <class T, class R = void, class Clock = SteadyClock>
class Batcher {
    static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                  "microbatch::Batcher<T>: T must be a non-const object type");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "microbatch::Batcher<T>: T must be nothrow destructible");

public:
    using item_type = T;       ///< The item type.
    using result_type = R;     ///< The per-item result type.
    using clock_type = Clock;  ///< The clock max_delay is measured with.
    /// An item's deadline: a `Clock::time_point` or a timeout (see item_deadline.hpp).
    using deadline_type = ItemDeadline<Clock>;
    /// What process_batch returns: `std::vector<R>`, or nothing for `R = void`.
    using batch_result_type = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    /// The stored batch function. Move-only, so process_batch may be too (e.g. a lambda that
    /// owns a `std::unique_ptr<Connection>`).
    using process_function = detail::UniqueFunction<batch_result_type(Batch<T>&)>;
    /// True if `T` can be constructed from `*it` for an iterator `it` of type @p It (the bulk
    /// submissions' requirement on their item range).
    template <class It>
    static constexpr bool is_item_iterator =
        std::is_constructible_v<T, decltype(*std::declval<It&>())>;
    /**
     * @brief The per-item form of process_batch's result: one `Outcome<R>` per item, in item
     *        order, so that one item's failure reaches that item only (`Outcome<void>` for
     *        `R = void`: success, or the item's exception).
     *
     * The form is chosen at compile time from what process_batch returns. A vector of the wrong
     * length fails every item of the batch with `ResultCountError`, as in the plain form; so
     * does, for that item only, an `Outcome<R>` holding neither a value nor an exception (a
     * moved-from one). The batch counts as succeeded (not in `Stats::batches_failed`); its
     * failed outcomes are in `Stats::items_failed` and `Stats::items_failed_individually`.
     */
    using outcome_result_type = std::vector<Outcome<R>>;
    /// The stored batch function of the per-item form.
    using outcome_function = detail::UniqueFunction<outcome_result_type(Batch<T>&)>;

    /**
     * @brief Creates the batcher and starts its timer thread (unless max_delay is
     *        `nanoseconds::max()`) and, without an executor, its own pool of `workers` threads.
     *
     * @param options  validated here: `std::invalid_argument` naming the option and its value.
     * @param process  `process_batch`, called as `process(batch)` with a `Batch<T>&`; returns
     *                 `std::vector<R>` (one result per item) or, for `R = void`, nothing; or
     *                 `outcome_result_type` (one `Outcome<R>` per item). Checked at compile time.
     * @param clock    the clock instance (a `ManualClock` handle in tests).
     * @throws std::invalid_argument on invalid options; `std::bad_alloc`, `std::system_error`.
     */
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Batcher>>>
    Batcher(Options options, F&& process, Clock clock = Clock{})
        : options_(std::move(options)), clock_(std::move(clock)) {
        store_process(std::forward<F>(process));  // checks its signature at compile time
        initialise();
    }

    /**
     * @brief Like the constructor above, with an item cost function (README "Weighted
     *        batches"): `cost.function(item)` weighs each item once, on its submitting thread,
     *        for `Options::max_batch_cost`, `Options::max_pending_cost` and the cost stats.
     *
     * Items are best submitted as `T`: an argument of another type is first copied into a
     * temporary `T` to be weighed (one whose `T` can only be made by moving it makes the submit
     * throw `std::invalid_argument`, the argument untouched).
     * @param options  as above; `max_batch_cost` and `max_pending_cost` may be set.
     * @param cost     `microbatch::cost_by(f)`, with `f` callable as `std::size_t(const T&)`
     *                 (checked at compile time).
     * @param process  as above.
     * @param clock    as above.
     * @throws as the constructor above.
     */
    template <class C, class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Batcher>>>
    Batcher(Options options, CostBy<C> cost, F&& process, Clock clock = Clock{})
        : options_(std::move(options)), clock_(std::move(clock)) {
        static_assert(detail::is_cost_function_v<C, T>,
                      "microbatch::Batcher: the cost function (cost_by) must be callable as "
                      "std::size_t(const T&)");
        if constexpr (detail::is_cost_function_v<C, T>) {
            cost_function_ = cost_function(std::move(cost.function));
        }
        store_process(std::forward<F>(process));
        initialise();
    }

    Batcher(const Batcher&) = delete;
    Batcher& operator=(const Batcher&) = delete;

    /// @brief Calls `close()`: processes everything accepted, then releases the threads.
    ~Batcher() {
        close();
        pool_.reset();  // joins the owned pool's threads (idle by now)
    }

    /**
     * @brief Submits @p item and returns a handle to its result. Blocks while the batcher is
     *        full.
     * @throws ClosedError if the batcher is closed (also when it closes while blocked);
     *         ReentrancyError if it finds the batcher full inside one of its own batches
     *         (see "Re-entrancy" above); whatever constructing `T` from @p item throws;
     *         `std::bad_alloc`.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    Handle<R> submit(U&& item) {
        Handle<R> handle;
        throw_if_rejected(submit_with_handle(std::forward<U>(item), wait_forever, {}, handle));
        return handle;
    }

    /**
     * @brief Submits @p item; `callback(Outcome<R>&&)` runs on a worker after its batch was
     *        processed. Blocks while the batcher is full. Allocates nothing.
     *
     * The callback is never invoked if this call throws.
     * @throws as `submit(item)`.
     */
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    void submit(U&& item, F&& callback) {
        throw_if_rejected(
            submit_impl(std::forward<U>(item), wait_forever, {}, emplacer<F>(callback)));
    }

    /**
     * @brief Fire-and-forget: submits @p item without a per-item result. Blocks while full.
     * @throws as `submit(item)`.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    void post(U&& item) {
        throw_if_rejected(submit_impl(std::forward<U>(item), wait_forever, {}, no_completion));
    }

    /**
     * @brief Fire-and-forget without blocking: `accepted`, or `full`/`closed` at once (the item
     *        is then left untouched). May report `full` spuriously while a batch hand-over is in
     *        progress on another thread.
     * @throws whatever constructing `T` from @p item throws.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item) {
        return submit_impl(std::forward<U>(item), wait_never, {}, no_completion);
    }

    /// @brief Like `try_submit(item)`, with a callback as in `submit(item, callback)`; the
    ///        callback is invoked only if the item was accepted.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, F&& callback) {
        return submit_impl(std::forward<U>(item), wait_never, {}, emplacer<F>(callback));
    }

    /// @brief Like `try_submit(item)`; on acceptance @p handle receives the item's handle.
    ///        (`try_submit_handle(item)` returns both instead.)
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, Handle<R>& handle) {
        return submit_with_handle(std::forward<U>(item), wait_never, {}, handle);
    }

    /**
     * @brief Like `try_submit(item)`, returning the status together with the item's handle
     *        (valid when accepted): `if (auto submitted = b.try_submit_handle(x)) ...`.
     * @throws whatever constructing `T` from @p item throws; `std::bad_alloc`.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> try_submit_handle(U&& item) {
        SubmitResult<R> result;
        result.status = submit_with_handle(std::forward<U>(item), wait_never, {}, result.handle);
        return result;
    }

    /**
     * @brief Fire-and-forget, waiting at most @p timeout for space: `accepted`, `full` (timed
     *        out) or `closed`. The item is left untouched unless accepted. A timeout too large to
     *        add to the current time waits without a time limit.
     * @throws ReentrancyError if it finds the batcher full inside one of its own batches, for
     *         any timeout including zero (see "Re-entrancy" above; `try_submit` never throws it).
     */
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return submit_impl(std::forward<U>(item), wait_until_deadline, deadline_after(timeout),
                           no_completion);
    }

    /// @brief Like `submit_for(item, timeout)`, with a callback as in `submit(item, callback)`.
    template <class U, class F, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return submit_impl(std::forward<U>(item), wait_until_deadline, deadline_after(timeout),
                           emplacer<F>(callback));
    }

    /// @brief Like `submit_for(item, timeout)`; on acceptance @p handle receives the handle.
    ///        (`submit_for_handle(item, timeout)` returns both instead.)
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, Handle<R>& handle,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return submit_with_handle(std::forward<U>(item), wait_until_deadline,
                                  deadline_after(timeout), handle);
    }

    /**
     * @brief Like `submit_for(item, timeout)`, returning the status (`accepted`, `full` when
     *        timed out, `closed`) together with the item's handle (valid when accepted).
     * @throws ReentrancyError if it would block inside this batcher's own process_batch;
     *         whatever constructing `T` from @p item throws; `std::bad_alloc`.
     */
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> submit_for_handle(
        U&& item, const std::chrono::duration<Rep, Period>& timeout) {
        SubmitResult<R> result;
        result.status = submit_with_handle(std::forward<U>(item), wait_until_deadline,
                                           deadline_after(timeout), result.handle);
        return result;
    }

    // ---- Bulk submission (bodies: detail/batcher_bulk.hpp) -----------------------------------
    //
    // The `_n` forms submit the n items *first, *(first + 1), ... in order, as n single
    // submissions would, but claim each batch's slots with one atomic operation (at most
    // `max_bulk_claim` slots per claim), so a producer pays the shared-counter cost once per
    // run of items rather than once per item. Items are constructed from `*it` (pass a
    // `std::move_iterator` to move them); the iterator is advanced once per accepted item and
    // never dereferenced beyond the accepted prefix. The items may span several batches; items
    // of other threads may fall between two of those batches, never inside this call's run of
    // slots in one batch. Per-producer order and exactly-once hold as for single submissions.
    // Acceptance is by prefix: the first `accepted` items were accepted, the rest untouched.
    // If constructing an item (or copying the callback) throws, the items before it were
    // accepted, it and the rest were not, and the exception propagates.

    /// Most slots one bulk claim takes (a larger run takes several claims). Bounds the stray
    /// increments a claim racing a seal can leave on the head word.
    static constexpr std::size_t max_bulk_claim = 256;

    /**
     * @brief Bulk fire-and-forget: submits the @p n items at @p first, blocking while the
     *        batcher is full, until every item is accepted. Allocates nothing.
     * @throws BulkClosedError (a ClosedError) if the batcher is closed before every item was
     *         accepted: its `accepted()` items were accepted and are processed, the rest were
     *         left untouched; ReentrancyError as `submit(item)`; whatever constructing `T` from
     *         `*first` throws (see above).
     */
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    void post_n(InputIt first, std::size_t n) {
        throw_if_bulk_rejected(submit_bulk(first, n, wait_forever, {}, BulkPostStore{}), n);
    }

    /// @brief Bulk fire-and-forget without blocking: accepts the longest prefix of the @p n
    ///        items that fits now (see BulkResult). Never throws `ClosedError`.
    /// @throws whatever constructing `T` from `*first` throws.
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_post_n(InputIt first, std::size_t n) {
        return submit_bulk(first, n, wait_never, {}, BulkPostStore{});
    }

    /// @brief Bulk fire-and-forget, waiting at most @p timeout in all for space: the status and
    ///        the number of items accepted (a prefix).
    /// @throws ReentrancyError as `submit_for`; whatever constructing `T` throws.
    template <class InputIt, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult post_n_for(InputIt first, std::size_t n,
                                        const std::chrono::duration<Rep, Period>& timeout) {
        return submit_bulk(first, n, wait_until_deadline, deadline_after(timeout), BulkPostStore{});
    }

    /**
     * @brief Bulk submission with per-item results, blocking until every item is accepted.
     *
     * @p sink is either
     * - a callable `void(std::size_t index, Outcome<R>&&)`: copied into each item's slot and
     *   invoked on a worker with the item's index in the range (0 for `*first`) and its
     *   outcome; the copy plus an index must fit the 48-byte inline callback storage and be
     *   nothrow move constructible; allocates nothing; or
     * - an output iterator of `Handle<R>`: receives each accepted item's handle, in order
     *   (one pooled handle state per item, as `submit(item)`).
     * @return the output iterator past the last handle written (for a callable sink, the sink).
     * @throws as `post_n`.
     */
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    Sink submit_n(InputIt first, std::size_t n, Sink sink) {
        auto store = bulk_store(sink);
        throw_if_bulk_rejected(submit_bulk(first, n, wait_forever, {}, store), n);
        return store.release();
    }

    /// @brief As `submit_n`, without blocking: the longest prefix that fits now is accepted;
    ///        @p sink receives the handles (or callbacks) of exactly those items.
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_submit_n(InputIt first, std::size_t n, Sink sink) {
        auto store = bulk_store(sink);
        return submit_bulk(first, n, wait_never, {}, store);
    }

    /// @brief As `submit_n`, waiting at most @p timeout in all for space.
    template <class InputIt, class Sink, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult submit_n_for(InputIt first, std::size_t n, Sink sink,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        auto store = bulk_store(sink);
        return submit_bulk(first, n, wait_until_deadline, deadline_after(timeout), store);
    }

    /**
     * @name Submitting with a deadline (README "Deadlines")
     * Each form above with an item deadline first: a `Clock::time_point` or a timeout from
     * this call. An item still in its batch when the deadline passes is removed when the batch
     * is formed (it never reaches process_batch) and completes with `DeadlineExceeded`; with
     * `Options::deadline_sealing` the batch is sealed early enough for it to finish in time.
     * With `Options::admission_control`, a submit predicted to finish after its deadline is
     * refused at once: `SubmitStatus::infeasible`, or `DeadlineInfeasible` from the forms that
     * throw (the item is left untouched). Blocking forms still wait for space as without a
     * deadline. Otherwise as the form without a deadline (same exceptions).
     * @{
     */
    /// @brief `submit(item)` with a deadline.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    Handle<R> submit(deadline_type deadline, U&& item);
    /// @brief `submit(item, callback)` with a deadline.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    void submit(deadline_type deadline, U&& item, F&& callback);
    /// @brief `post(item)` with a deadline (an expired item is only counted).
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    void post(deadline_type deadline, U&& item);
    /// @brief `try_submit(item)` with a deadline.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(deadline_type deadline, U&& item);
    /// @brief `try_submit(item, callback)` with a deadline.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus try_submit(deadline_type deadline, U&& item, F&& callback);
    /// @brief `try_submit_handle(item)` with a deadline.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> try_submit_handle(deadline_type deadline, U&& item);
    /// @brief `submit_for(item, timeout)` with a deadline (@p timeout bounds the wait for space).
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(deadline_type deadline, U&& item,
                                          const std::chrono::duration<Rep, Period>& timeout);
    /// @brief `submit_for(item, callback, timeout)` with a deadline.
    template <class U, class F, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus submit_for(deadline_type deadline, U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout);
    /// @brief `submit_for_handle(item, timeout)` with a deadline.
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> submit_for_handle(
        deadline_type deadline, U&& item, const std::chrono::duration<Rep, Period>& timeout);
    /// @}

    /**
     * @brief The bulk forms with a deadline (README "Deadlines"): every item of the run gets
     *        @p deadline (one clock read per call for a timeout); otherwise as the forms above.
     *
     * With admission control on, the run is admitted or refused as a whole, judged for its
     * last item (the work ahead of it includes the run's other items): refused, nothing is
     * accepted and the status is `SubmitStatus::infeasible` (`DeadlineInfeasible` from
     * `post_n`/`submit_n`), each item counted in `Stats::items_rejected_infeasible`.
     */
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    void post_n(deadline_type deadline, InputIt first, std::size_t n) {
        throw_if_bulk_rejected(
            submit_bulk_due(deadline, first, n, wait_forever, {}, BulkPostStore{}), n);
    }
    /// @brief `try_post_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_post_n(deadline_type deadline, InputIt first, std::size_t n) {
        return submit_bulk_due(deadline, first, n, wait_never, {}, BulkPostStore{});
    }
    /// @brief `post_n_for` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult post_n_for(deadline_type deadline, InputIt first, std::size_t n,
                                        const std::chrono::duration<Rep, Period>& timeout) {
        return submit_bulk_due(deadline, first, n, wait_until_deadline, deadline_after(timeout),
                               BulkPostStore{});
    }
    /// @brief `submit_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    Sink submit_n(deadline_type deadline, InputIt first, std::size_t n, Sink sink) {
        auto store = bulk_store(sink);
        throw_if_bulk_rejected(submit_bulk_due(deadline, first, n, wait_forever, {}, store), n);
        return store.release();
    }
    /// @brief `try_submit_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_submit_n(deadline_type deadline, InputIt first, std::size_t n,
                                          Sink sink) {
        auto store = bulk_store(sink);
        return submit_bulk_due(deadline, first, n, wait_never, {}, store);
    }
    /// @brief `submit_n_for` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult submit_n_for(deadline_type deadline, InputIt first, std::size_t n,
                                          Sink sink,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        auto store = bulk_store(sink);
        return submit_bulk_due(deadline, first, n, wait_until_deadline, deadline_after(timeout),
                               store);
    }

    /**
     * @brief Dispatches the partial batch now (reason `flush`), if it holds any item.
     *        Never blocks (beyond handing the batch to the executor).
     */
    void flush();

    /**
     * @brief Flushes, then blocks until every item accepted before the call has finished
     *        (its batch ran and its handle/callback completed). Items submitted concurrently may
     *        or may not be waited for.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks,
     *         also nested (see "Re-entrancy" above).
     */
    void wait_idle();

    /**
     * @brief Stops accepting items, dispatches the partial batch (reason `close`) and blocks
     *        until every accepted item has finished. Idempotent; concurrent calls all wait.
     *        Producers blocked in submit wake with `ClosedError`.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks,
     *         also nested (it would wait for itself; see "Re-entrancy" above).
     */
    void close() { close_impl(nullptr); }

    /**
     * @brief Like `close()`, but gives up waiting after @p timeout and reports what was still
     *        in flight. The batcher stays closed; the remaining batches keep running and a
     *        later `close()` (or the destructor) waits for them.
     */
    template <class Rep, class Period>
    CloseResult close_for(const std::chrono::duration<Rep, Period>& timeout) {
        const auto deadline = deadline_after(timeout);
        return close_impl(&deadline);
    }

    /// @brief True once close() (or close_for) has begun.
    bool is_closed() const noexcept {
        // acquire: a true answer happens-after the close that set the bit. Lane 0 is closed
        // first, so this turns true as soon as close() has begun.
        return (lanes_[0].head.load(std::memory_order_acquire) & closed_bit) != 0;
    }

    /**
     * @brief Producers blocked in a submit because their lane is full, or because
     *        `Options::max_pending_cost` is reached, queued to be admitted in arrival order
     *        (README "Deadlines", fair admission). Thread-safe; takes the mutexes blocked
     *        producers wait on; a snapshot.
     */
    std::size_t waiting_producers() const;

    /// @brief A snapshot of the counters (see `Stats` for its consistency). Thread-safe, O(1).
    ///        Not lock-free: it reads the atomic counters, then copies the cost-model fit under
    ///        a mutex that workers hold briefly once per finished batch, so it may wait for one
    ///        (never for a submit: producers do not take that mutex).
    Stats stats() const noexcept;

    /**
     * @brief Accepted items not yet finished: in the batch being filled, sealed and waiting,
     *        or running. Thread-safe, lock-free, O(lanes); a snapshot that may be stale by the
     *        time it returns.
     */
    std::size_t pending() const noexcept;

    /**
     * @brief The total cost (`cost_by`) of accepted items not yet finished: the quantity
     *        `Options::max_pending_cost` bounds (0 without a cost function). An item's cost
     *        counts from its acceptance until its batch has completed every item. Thread-safe,
     *        lock-free, O(1); a snapshot.
     */
    std::size_t pending_cost() const noexcept {
        // relaxed: a snapshot; nothing is read through it.
        return static_cast<std::size_t>(pending_cost_.load(std::memory_order_relaxed));
    }

    /**
     * @brief Batches dispatched and not yet finished: the count `max_in_flight` limits. A
     *        batch counts until its worker has completed every item and is about to take the
     *        next batch. Thread-safe, lock-free, O(1); a snapshot.
     */
    std::size_t in_flight() const noexcept;

    /**
     * @brief Sets the batch size bound for batches opened from now on (the batch being filled
     *        keeps the bound it opened with). Thread-safe; lock-free.
     *
     * Storage stays what was reserved for the constructed `max_batch_size`: each batch still
     * occupies one buffer of that size, so with a smaller bound producers block after
     * ceil(capacity / constructed size) batches rather than after `capacity` items.
     * @throws std::invalid_argument unless 1 <= @p size <= the constructed max_batch_size.
     */
    void set_max_batch_size(std::size_t size);

    /**
     * @brief Sets the time bound; effective for every decision from now on (the batch being
     *        filled included). `nanoseconds::max()` disables it. Thread-safe; wakes the timer.
     * @throws std::invalid_argument if @p delay is negative.
     */
    void set_max_delay(std::chrono::nanoseconds delay);

    /**
     * @brief Sets the in-flight limit (0 = automatic, as in Options::max_in_flight), effective
     *        for every decision from now on. Thread-safe; wakes the timer. Raising it above the
     *        value the batcher was built with can make producers block before `capacity` items
     *        (storage for partial batches was reserved for the constructed limit).
     */
    void set_max_in_flight(std::size_t limit);

    /// @brief The batch size bound in force (see set_max_batch_size). Thread-safe.
    std::size_t max_batch_size() const noexcept;
    /// @brief The time bound in force (`nanoseconds::max()` when disabled). Thread-safe.
    std::chrono::nanoseconds max_delay() const noexcept;
    /// @brief The in-flight limit in force (resolved: never 0). Thread-safe.
    std::size_t max_in_flight() const noexcept;

    /// @brief The options the batcher was built with.
    const Options& options() const noexcept { return options_; }

    /// @brief The clock the batcher measures max_delay with.
    const Clock& clock() const noexcept { return clock_; }

private:
    // ---- The head word, lanes and batch buffers: detail/batcher_ring.hpp --------------------
    using Lane = detail::BatcherLane;
    using Buffer = detail::BatcherBuffer;
    static constexpr std::uint64_t count_mask = detail::head_word::count_mask;
    static constexpr std::uint64_t tag_mask = detail::head_word::tag_mask;
    static constexpr std::uint64_t closed_bit = detail::head_word::closed_bit;
    static constexpr std::uint64_t sealed_count = detail::head_word::sealed_count;
    static constexpr std::size_t max_buffers = detail::head_word::max_buffers;
    static constexpr std::int64_t unset_time = detail::head_word::unset_time;
    static constexpr std::uint32_t no_buffer = detail::head_word::no_buffer;
    static std::uint64_t make_head(std::uint64_t sequence, std::uint64_t buffer) noexcept {
        return detail::head_word::make_head(sequence, buffer);
    }
    static std::uint32_t buffer_of(std::uint64_t head) noexcept {
        return detail::head_word::buffer_of(head);
    }
    static std::uint64_t tag_of(std::uint64_t head) noexcept {
        return detail::head_word::tag_of(head);
    }
    enum WaitMode { wait_never, wait_forever, wait_until_deadline };
    using Deadline = std::chrono::steady_clock::time_point;  // timed submits: steady clock
    template <class Rep, class Period>
    static Deadline deadline_after(const std::chrono::duration<Rep, Period>& timeout) {
        return detail::steady_deadline_after(timeout);
    }

    struct ItemsDeleter {
        std::size_t count;
        void operator()(T* items) const noexcept { std::allocator<T>().deallocate(items, count); }
    };
    void initialise();  // detail/batcher_seal.hpp

    // Items in the batch being filled described by @p head (0 if it is sealed or closed).
    std::uint64_t filling_count(std::uint64_t head) const noexcept {
        const std::uint64_t count = head & count_mask;
        if ((head & closed_bit) != 0 || count >= batch_size_) {
            return 0;
        }
        // relaxed: see Buffer::start; a stale value only skews a statistic.
        const std::uint64_t start = buffers_[buffer_of(head)].start.load(std::memory_order_relaxed);
        return count > start ? count - start : 0;
    }

    // ---- Load, policy inputs: detail/batcher_policy.hpp ------------------------------------
    LoadEstimate load_estimate() const noexcept;
    SealInputs policy_inputs(SealTrigger trigger, std::int64_t now, std::size_t count,
                             std::size_t pending, std::size_t bound, std::int64_t opened_at,
                             std::int64_t last_change_at) const noexcept;
    // Items pending if the open batch holds @p count: those in flight plus @p count.
    std::size_t pending_with(std::uint64_t count) const noexcept {
        // relaxed: a policy input (see in_flight_batches_).
        return static_cast<std::size_t>(in_flight_items_.load(std::memory_order_relaxed) + count);
    }
    // With a batch size of 1 every claim fills and seals its batch: no partial batch ever
    // exists, so the policy's estimates, the free-worker seal and rule 5c's population sample
    // are never needed. Skipping them saves the worker ~300 instructions per (one-item) batch
    // and a read of each lane's head, a cache line the producers keep writing.
    bool every_claim_seals() const noexcept { return batch_size_ == 1; }
    // Rule 5c's cheap test for producers: the batch's @p count items plus those in flight reach
    // the usual population (population_threshold_, 0 when the rule is off).
    bool reaches_population(std::uint64_t count) const noexcept {
        // relaxed: policy inputs; decide_seal confirms.
        const std::uint32_t threshold = population_threshold_.load(std::memory_order_relaxed);
        return threshold != 0 && pending_with(count) >= threshold;
    }
    // The size bound of the batch in buffer @p buffer (the batch size in force when it opened,
    // or fewer when the lane was short of free items).
    std::uint32_t bound_of(std::uint32_t buffer) const noexcept {
        // relaxed: see Buffer::start.
        return batch_size_ - buffers_[buffer].start.load(std::memory_order_relaxed);
    }
    void note_sealed(std::uint32_t size, std::int64_t now, std::int64_t opened_at,
                     bool at_arrival) noexcept;
    void refresh_producer_threshold() noexcept;
    void note_population(std::size_t pending) noexcept;
    void wake_timer();
    void seal_for_free_worker(std::int64_t now = unset_time);

    // ---- Submission: detail/batcher_submit.hpp --------------------------------------------

    static constexpr detail::NoCompletionStore<R> no_completion{};

    // Stores the callback (moved if the caller passed an rvalue, copied otherwise). Every
    // callback overload comes through here, so this is where a wrong signature is reported.
    template <class F>
    static auto emplacer(std::remove_reference_t<F>& callback) {
        static_assert(std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>,
                      "microbatch::Batcher: the callback must be callable as "
                      "void(microbatch::Outcome<R>&&), where R is the batcher's result type "
                      "(Outcome<void> for Batcher<T>)");
        return [&callback](detail::Completion<R>& slot) {
            if constexpr (std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>) {
                slot.emplace(std::forward<F>(callback));
                return true;
            } else {
                return false;  // not reached: the static_assert above failed
            }
        };
    }

    template <class U>
    SubmitStatus submit_with_handle(U&& item, WaitMode mode, Deadline deadline, Handle<R>& out);
    template <class Submit>
    SubmitStatus with_new_handle(Handle<R>& out, Submit&& submit);
    void throw_if_rejected(SubmitStatus status) const {
        if (status == SubmitStatus::closed) {
            MICROBATCH_THROW(ClosedError("microbatch::Batcher: submit on a closed batcher"));
        }
        if (status == SubmitStatus::infeasible) {  // admission control (deadlines)
            MICROBATCH_THROW(DeadlineInfeasible(
                "microbatch::Batcher: the item cannot finish by its deadline (admission control)"));
        }
    }

    // The calling thread's lane: fixed per thread, so one producer's items stay in order.
    Lane& lane_for_this_thread() const noexcept {
        return lane_count_ == 1 ? lanes_[0] : lanes_[detail::producer_number() % lane_count_];
    }

    // ---- Bulk submission: detail/batcher_bulk.hpp ------------------------------------------
    struct BulkPostStore;
    template <class F>
    class BulkCallbackStore;
    template <class OutputIt>
    class BulkHandleStore;
    template <class Sink>
    auto bulk_store(Sink& sink);
    void throw_if_bulk_rejected(const BulkResult& result, std::size_t n) const;
    template <class Inner>
    struct BulkDeadlineStore;  // Options::default_timeout for bulk items
    template <class InputIt, class Store>
    BulkResult submit_bulk(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                           Store&& store);
    template <class InputIt, class Store>
    BulkResult submit_bulk_due(const deadline_type& due, InputIt& first, std::size_t n,
                               WaitMode mode, Deadline wait, Store&& store);
    template <class InputIt, class Store>
    BulkResult claim_bulk(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                          Store& store);
    template <class InputIt, class Store>
    std::uint32_t fill_run(Lane& lane, std::uint64_t head, std::uint32_t index, std::uint32_t count,
                           InputIt& first, std::size_t done, Store& store, std::uint64_t cost = 0);
    template <class U, class Store>
    void publish_slot(std::size_t slot, U&& item, Store& store) noexcept;
    void after_fill(Lane& lane, std::uint64_t head, std::uint32_t buffer, std::uint32_t start,
                    std::uint32_t end, std::int64_t opened_now);
    void maybe_seal_early(Lane& lane, std::uint64_t head, std::uint32_t start, std::uint32_t end);
    void seal_early_after_fill(Lane& lane, std::uint64_t head, std::uint32_t start,
                               std::uint32_t end);

    template <class U, class Store>
    SubmitStatus submit_impl(U&& item, WaitMode mode, Deadline deadline, Store&& store);
    template <class U, class Store>
    SubmitStatus submit_general(U&& item, WaitMode mode, Deadline deadline, Store& store);
    bool try_claim_slot(Lane& lane, std::uint64_t& head) noexcept;
    // @p cost: the item's cost (cost_by), taken off its batch again if the item turns into a
    // hole. Likewise for fill_run's single item (weighed bulk submissions fill one at a time).
    template <class U, class Store>
    SubmitStatus fill_slot(Lane& lane, std::uint64_t head, std::uint32_t index, U&& item,
                           Store& store, std::uint64_t cost = 0);
    std::int64_t note_batch_opened(Buffer& buffer, bool needs_timer);
    // @p items: the items a rejection refuses (a bulk submission's rest), see detail/.
    SubmitStatus wait_for_space(Lane& lane, WaitMode mode, Deadline deadline,
                                detail::AdmissionTurn& turn, std::size_t items = 1);
    SubmitStatus wait_for_space(Lane& lane, WaitMode mode, Deadline deadline) {
        detail::AdmissionTurn turn;  // callers that do not pass the turn on to their claim
        return wait_for_space(lane, mode, deadline, turn);
    }
    SubmitStatus wait_for_space_registered(Lane& lane, WaitMode mode, Deadline deadline,
                                           detail::AdmissionTurn& turn);
    // Fair admission: detail/batcher_admission.hpp.
    SubmitStatus wait_in_line(Lane& lane, WaitMode mode, Deadline deadline,
                              detail::AdmissionTurn& turn);
    void wake_first_waiter(Lane& lane);
    void wake_all_waiters();

    // ---- Item costs (cost_by, max_batch_cost, max_pending_cost): detail/batcher_cost.hpp ---
    using cost_function = detail::UniqueFunction<std::size_t(const T&)>;
    void initialise_cost();
    template <class U>
    std::uint64_t weigh(const U& item) const;
    template <class U>
    std::uint64_t weigh_or_refuse(const U& item);
    struct CostClaim {
        SubmitStatus status;
        std::uint64_t head;
        std::uint32_t index;
        bool seal_after;  // the item filled its batch's cost bound: seal once it is written
    };
    CostClaim claim_weighed(Lane& lane, std::uint64_t cost, WaitMode mode, Deadline deadline,
                            std::size_t items);
    template <class U, class Store>
    SubmitStatus submit_weighed(U&& item, WaitMode mode, Deadline deadline, Store& store);
    template <class InputIt, class Store>
    BulkResult submit_bulk_weighed(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                                   Store& store);
    SubmitStatus reserve_cost(std::uint64_t cost, WaitMode mode, Deadline deadline,
                              std::size_t items);
    bool try_reserve_cost(std::uint64_t cost) noexcept;
    SubmitStatus wait_for_cost(std::uint64_t cost, WaitMode mode, Deadline deadline);
    void release_cost(std::uint64_t cost);
    void wake_cost_waiters();
    void seal_for_cost(Lane& lane);
    void seal_for_cost_all();
    bool cost_wanted() const noexcept;

    // ---- Deadlines, cancellation, admission control: detail/batcher_deadlines.hpp ----------

    void initialise_deadlines();
    template <class Store>
    struct DeadlineStore;  // wraps a Store: also records the item's deadline in its slot
    template <class U, class Store>
    SubmitStatus submit_due(const deadline_type& due, U&& item, WaitMode mode, Deadline wait,
                            Store&& store);
    template <class U>
    SubmitStatus submit_due_with_handle(const deadline_type& due, U&& item, WaitMode mode,
                                        Deadline wait, Handle<R>& out);
    bool admissible(std::int64_t deadline, std::int64_t now, std::size_t ahead = 0) const noexcept;
    std::int64_t predicted_batch_ticks(std::size_t size) const noexcept;
    void note_item_deadline(std::size_t slot, std::int64_t deadline) noexcept;
    bool resolve_and_admit(const deadline_type& due, std::size_t count, std::int64_t& deadline);
    void keep_deadline(detail::Completion<R>& slot, bool has_completion,
                       std::int64_t deadline) noexcept;
    SealInputs with_item_deadline(SealInputs in, std::uint32_t buffer) const noexcept;
    std::size_t screen(T* items, detail::Completion<R>* completions,
                       std::atomic<std::uint8_t>* states, std::size_t size) noexcept;

    // ---- Sealing, dispatch, buffer ring: detail/batcher_seal.hpp ---------------------------

    bool seal_current(Lane& lane, DispatchReason reason, std::uint64_t expected, bool only_tagged,
                      bool at_arrival = false);
    // at_arrival: the sealer is the producer whose item just joined the batch, so the seal time
    // is the last arrival's (a burst-gap sample, see note_sealed).
    // @p now: the caller's fresh clock reading, or unset_time to read the clock.
    void seal_and_dispatch(std::uint32_t buffer, std::uint32_t size, DispatchReason reason,
                           bool at_arrival = false, std::int64_t now = unset_time);
    void post_batch(std::uint32_t buffer);
    void arrive(std::uint32_t index);
    void open_buffer(std::uint32_t index);
    void try_open(std::uint32_t index);
    std::int64_t take_items(Lane& lane, std::int64_t wanted) noexcept;
    void return_items(Lane& lane, std::int64_t count);
    void retire_unused(Buffer& buffer);
    static void mark_finished(Buffer& buffer, std::uint64_t sequence) noexcept;

    // ---- Running a batch: detail/batcher_run.hpp ------------------------------------------

    void run_batch(std::uint32_t buffer_index) noexcept;

    using batch_result_type_or_empty =
        std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>;
    void complete_ok(detail::Completion<R>& completion, batch_result_type_or_empty& results,
                     std::size_t index) noexcept;
    void deliver(detail::Completion<R>& completion, Outcome<R>&& outcome) noexcept;
    static std::uint8_t wait_for_slot(std::atomic<std::uint8_t>& state) noexcept;

    // ---- process_batch's forms, per-item outcomes, isolation: detail/batcher_outcomes.hpp --

    template <class F>
    void store_process(F&& process);
    void call_process(Batch<T>& batch, std::exception_ptr& error,
                      batch_result_type_or_empty& results,
                      detail::BatchOutcomes<R>& outcomes) noexcept;
    void call_part(Batch<T>& part, std::size_t level, detail::BatchOutcomes<R>& outcomes) noexcept;
    void isolate(Batch<T>& part, std::size_t level, std::exception_ptr error,
                 detail::BatchOutcomes<R>& outcomes) noexcept;
    void record_outcomes(const detail::BatchOutcomes<R>& outcomes) noexcept;
    void complete_outcomes(detail::Completion<R>* completions,
                           detail::BatchOutcomes<R>& outcomes) noexcept;
    std::size_t compact(T* items, detail::Completion<R>* completions,
                        std::atomic<std::uint8_t>* states, std::size_t size,
                        std::size_t& failed) noexcept;
    void finish_party(std::uint32_t index) noexcept;

    // ---- Timer: detail/batcher_timer.hpp --------------------------------------------------

    void run_timer();
    bool current_batch_start(const Lane& lane, std::uint64_t& head,
                             std::int64_t& opened_at) const noexcept;

    // ---- Idle and close: detail/batcher_close.hpp -----------------------------------------

    std::uint64_t flush_and_target(Lane& lane);
    bool finished_through(const Lane& lane, std::uint64_t target) const noexcept;
    void check_not_reentrant(const char* what) const {
        if (detail::is_running_on_this_thread(this)) {
            MICROBATCH_THROW(ReentrancyError(std::string("microbatch::Batcher: ") + what +
                                             "() called from inside this batcher's "
                                             "process_batch or callback would wait for itself"));
        }
    }

    CloseResult close_impl(const Deadline* deadline);
    void begin_close();
    std::int64_t to_nanoseconds(std::int64_t ticks) const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(typename Clock::duration(ticks))
            .count();
    }

    // ---- Members --------------------------------------------------------------------------
    Options options_;
    process_function process_;
    outcome_function process_outcomes_;  // instead of process_ for the per-item form
    Clock clock_;
    std::uint32_t batch_size_ = 0;
    std::uint32_t lane_count_ = 1;
    std::uint32_t buffers_per_lane_ = 0;
    bool seal_early_ = true;
    bool deadline_sealing_ = true;    // Options::deadline_sealing
    bool admission_control_ = false;  // Options::admission_control
    bool has_default_timeout_ = false;
    deadline_type default_deadline_{std::chrono::nanoseconds(0)};  // Options::default_timeout
    std::size_t admission_workers_ = 1;   // batches that run at once, for admissible()
    cost_function cost_function_;         // empty without cost_by
    std::uint64_t max_batch_cost_ = 0;    // Options::max_batch_cost (0: none)
    std::uint64_t max_pending_cost_ = 0;  // Options::max_pending_cost (0: none)

    // Settings changeable at run time (relaxed: each is one independent value).
    std::atomic<std::uint32_t> current_batch_size_{0};
    std::atomic<std::int64_t> max_delay_ticks_{-1};
    std::atomic<std::size_t> max_in_flight_{1};
    // Producers seal once their batch holds this many items and a worker is free
    // (producer_seal_threshold(); recomputed at every seal and setter).
    std::atomic<std::uint32_t> producer_threshold_{0};

    // Batches dispatched and not finished: the in-flight limit's counter. Its own cache line:
    // producers read it when their batch reaches the threshold, sealers and workers write it.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> in_flight_batches_{0};
    // The timer sleeps without a deadline because every worker is busy; a finishing worker
    // must wake it (seq_cst Dekker handshake with in_flight_batches_).
    std::atomic<bool> timer_waits_for_worker_{false};
    // Arrival-rate estimate: exponentially weighted items and nanoseconds between seals.
    // Updated by whichever thread seals, without a lock: concurrent seals may lose one sample,
    // which only makes the estimate a little less smooth.
    alignas(detail::cache_line_size) std::atomic<std::int64_t> last_seal_at_{unset_time};
    std::atomic<double> rate_items_{0.0};
    std::atomic<double> rate_nanoseconds_{0.0};
    std::atomic<std::uint64_t> rate_samples_{0};
    std::atomic<double> burst_gap_ns_{0.0};
    std::atomic<double> population_{0.0};
    std::atomic<double> population_mean_{0.0};
    // round(population_) while early sealing may use it, else 0: producers seal (worker free)
    // once their batch's items plus the items in flight reach it (rule 5c).
    std::atomic<std::uint32_t> population_threshold_{0};
    // The storage, read by every submit: a cache line of its own, away from the estimates
    // above, which a worker or sealer rewrites at every batch.
    alignas(detail::cache_line_size) std::unique_ptr<T, ItemsDeleter> items_{nullptr,
                                                                             ItemsDeleter{0}};
    std::unique_ptr<detail::Completion<R>[]> completions_;
    std::unique_ptr<std::atomic<std::uint8_t>[]> slot_states_;
    std::unique_ptr<Buffer[]> buffers_;
    std::unique_ptr<Lane[]> lanes_;
    // The timer's memory of each lane's batch (run_timer), allocated before the timer starts.
    struct TimerSeen {
        std::uint64_t batch = ~std::uint64_t{0};  // head without the count: which batch
        std::uint64_t count = 0;
        std::int64_t changed_at = unset_time;
    };
    std::unique_ptr<TimerSeen[]> timer_seen_;

    alignas(detail::cache_line_size) std::atomic<bool> timer_idle_{false};
    std::atomic<std::uint64_t> dispatched_batches_{0};
    // Accepted items of dispatched batches not yet finished (holes excluded), for close_for().
    std::atomic<std::uint64_t> in_flight_items_{0};
    std::atomic<std::uint32_t> slow_producers_{0};
    std::atomic<std::uint32_t> space_waiters_{0};
    std::mutex timer_mutex_;
    std::condition_variable timer_condition_;
    bool timer_stop_ = false;  // guarded by timer_mutex_
    std::optional<typename Clock::Sleeper> sleeper_;
    mutable std::mutex space_mutex_;
    std::condition_variable space_condition_;              // blocked producers sleep here
    std::unique_ptr<detail::AdmissionQueue[]> admission_;  // per lane, guarded by space_mutex_
    // Pending item costs (detail/batcher_cost.hpp): the total, and producers waiting for it to
    // fall, queued in arrival order under cost_mutex_.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> pending_cost_{0};
    std::atomic<std::uint32_t> cost_waiters_{0};
    mutable std::mutex cost_mutex_;
    std::condition_variable cost_condition_;
    detail::AdmissionQueue cost_queue_;  // guarded by cost_mutex_
    std::mutex idle_mutex_;
    std::condition_variable idle_condition_;
    std::uint32_t idle_waiters_ = 0;  // guarded by idle_mutex_
    // Batches opened and not finished; changes under idle_mutex_ except the increment in
    // open_buffer(), which always happens while another batch of the chain is still counted.
    std::atomic<std::int64_t> open_batches_{0};
    std::mutex close_mutex_;
    bool close_started_ = false;  // guarded by close_mutex_

    detail::StatsRecorder stats_;
    std::unique_ptr<ThreadPool> pool_;
    Executor executor_;
    std::thread timer_;  // last: started after everything it uses is constructed
};

}  // namespace microbatch

// The member functions, one file per step of an item's path (see each file's header comment).
#include "microbatch/detail/batcher_admission.hpp"
#include "microbatch/detail/batcher_bulk.hpp"
#include "microbatch/detail/batcher_close.hpp"
#include "microbatch/detail/batcher_control.hpp"
#include "microbatch/detail/batcher_cost.hpp"
#include "microbatch/detail/batcher_deadlines.hpp"
#include "microbatch/detail/batcher_outcomes.hpp"
#include "microbatch/detail/batcher_policy.hpp"
#include "microbatch/detail/batcher_run.hpp"
#include "microbatch/detail/batcher_seal.hpp"
#include "microbatch/detail/batcher_submit.hpp"
#include "microbatch/detail/batcher_timer.hpp"
