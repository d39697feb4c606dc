#pragma once
/**
 * @file batcher.hpp
 * @brief `microbatch::Batcher<T, R, Clock>`: groups submitted items into size- and
 *        time-bounded microbatches and runs a user function on each batch in a thread pool.
 */

#include <atomic>
#include <chrono>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/close_result.hpp"
#include "microbatch/detail/batcher_core.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/item_deadline.hpp"
#include "microbatch/options.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/stats.hpp"
#include "microbatch/submit_result.hpp"

namespace microbatch {

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
class Batcher : private detail::BatcherCore<T, R, Clock> {
    // The state and machinery: detail/batcher_core.hpp. This class adds the documented API.
    using Core = detail::BatcherCore<T, R, Clock>;
    static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                  "microbatch::Batcher<T>: T must be a non-const object type");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "microbatch::Batcher<T>: T must be nothrow destructible");

public:
    using item_type = T;       ///< The item type.
    using result_type = R;     ///< The per-item result type.
    using clock_type = Clock;  ///< The clock max_delay is measured with.
    /// An item's deadline: a `Clock::time_point` or a timeout (see item_deadline.hpp).
    using deadline_type = typename Core::deadline_type;
    /// What process_batch returns: `std::vector<R>`, or nothing for `R = void`.
    using batch_result_type = typename Core::batch_result_type;
    /// The stored batch function. Move-only, so process_batch may be too (e.g. a lambda that
    /// owns a `std::unique_ptr<Connection>`).
    using process_function = typename Core::process_function;
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
    using outcome_result_type = typename Core::outcome_result_type;
    /// The stored batch function of the per-item form.
    using outcome_function = typename Core::outcome_function;

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
        : Core(std::move(options), std::move(clock)) {
        Core::store_process(std::forward<F>(process));  // checks its signature at compile time
        Core::initialise();
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
        : Core(std::move(options), std::move(clock)) {
        static_assert(detail::is_cost_function_v<C, T>,
                      "microbatch::Batcher: the cost function (cost_by) must be callable as "
                      "std::size_t(const T&)");
        if constexpr (detail::is_cost_function_v<C, T>) {
            Core::cost_function_ = typename Core::cost_function(std::move(cost.function));
        }
        Core::store_process(std::forward<F>(process));
        Core::initialise();
    }

    Batcher(const Batcher&) = delete;
    Batcher& operator=(const Batcher&) = delete;

    /// @brief Calls `close()`: processes everything accepted, then releases the threads.
    ~Batcher() {
        close();
        Core::pool_.reset();  // joins the owned pool's threads (idle by now)
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
        Core::throw_if_rejected(
            Core::submit_with_handle(std::forward<U>(item), Core::wait_forever, {}, handle));
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
        Core::throw_if_rejected(Core::submit_impl(std::forward<U>(item), Core::wait_forever, {},
                                                  Core::template emplacer<F>(callback)));
    }

    /**
     * @brief Fire-and-forget: submits @p item without a per-item result. Blocks while full.
     * @throws as `submit(item)`.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    void post(U&& item) {
        Core::throw_if_rejected(
            Core::submit_impl(std::forward<U>(item), Core::wait_forever, {}, Core::no_completion));
    }

    /**
     * @brief Fire-and-forget without blocking: `accepted`, or `full`/`closed` at once (the item
     *        is then left untouched). May report `full` spuriously while a batch hand-over is in
     *        progress on another thread.
     * @throws whatever constructing `T` from @p item throws.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item) {
        return Core::submit_impl(std::forward<U>(item), Core::wait_never, {}, Core::no_completion);
    }

    /// @brief Like `try_submit(item)`, with a callback as in `submit(item, callback)`; the
    ///        callback is invoked only if the item was accepted.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, F&& callback) {
        return Core::submit_impl(std::forward<U>(item), Core::wait_never, {},
                                 Core::template emplacer<F>(callback));
    }

    /// @brief Like `try_submit(item)`; on acceptance @p handle receives the item's handle.
    ///        (`try_submit_handle(item)` returns both instead.)
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, Handle<R>& handle) {
        return Core::submit_with_handle(std::forward<U>(item), Core::wait_never, {}, handle);
    }

    /**
     * @brief Like `try_submit(item)`, returning the status together with the item's handle
     *        (valid when accepted): `if (auto submitted = b.try_submit_handle(x)) ...`.
     * @throws whatever constructing `T` from @p item throws; `std::bad_alloc`.
     */
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> try_submit_handle(U&& item) {
        SubmitResult<R> result;
        result.status =
            Core::submit_with_handle(std::forward<U>(item), Core::wait_never, {}, result.handle);
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
        return Core::submit_impl(std::forward<U>(item), Core::wait_until_deadline,
                                 Core::deadline_after(timeout), Core::no_completion);
    }

    /// @brief Like `submit_for(item, timeout)`, with a callback as in `submit(item, callback)`.
    template <class U, class F, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_impl(std::forward<U>(item), Core::wait_until_deadline,
                                 Core::deadline_after(timeout),
                                 Core::template emplacer<F>(callback));
    }

    /// @brief Like `submit_for(item, timeout)`; on acceptance @p handle receives the handle.
    ///        (`submit_for_handle(item, timeout)` returns both instead.)
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, Handle<R>& handle,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_with_handle(std::forward<U>(item), Core::wait_until_deadline,
                                        Core::deadline_after(timeout), handle);
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
        result.status = Core::submit_with_handle(std::forward<U>(item), Core::wait_until_deadline,
                                                 Core::deadline_after(timeout), result.handle);
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
    static constexpr std::size_t max_bulk_claim = Core::max_bulk_claim;

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
        Core::throw_if_bulk_rejected(
            Core::submit_bulk(first, n, Core::wait_forever, {}, typename Core::BulkPostStore{}), n);
    }

    /// @brief Bulk fire-and-forget without blocking: accepts the longest prefix of the @p n
    ///        items that fits now (see BulkResult). Never throws `ClosedError`.
    /// @throws whatever constructing `T` from `*first` throws.
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_post_n(InputIt first, std::size_t n) {
        return Core::submit_bulk(first, n, Core::wait_never, {}, typename Core::BulkPostStore{});
    }

    /// @brief Bulk fire-and-forget, waiting at most @p timeout in all for space: the status and
    ///        the number of items accepted (a prefix).
    /// @throws ReentrancyError as `submit_for`; whatever constructing `T` throws.
    template <class InputIt, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult post_n_for(InputIt first, std::size_t n,
                                        const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_bulk(first, n, Core::wait_until_deadline, Core::deadline_after(timeout),
                                 typename Core::BulkPostStore{});
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
        auto store = Core::bulk_store(sink);
        Core::throw_if_bulk_rejected(Core::submit_bulk(first, n, Core::wait_forever, {}, store), n);
        return store.release();
    }

    /// @brief As `submit_n`, without blocking: the longest prefix that fits now is accepted;
    ///        @p sink receives the handles (or callbacks) of exactly those items.
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_submit_n(InputIt first, std::size_t n, Sink sink) {
        auto store = Core::bulk_store(sink);
        return Core::submit_bulk(first, n, Core::wait_never, {}, store);
    }

    /// @brief As `submit_n`, waiting at most @p timeout in all for space.
    template <class InputIt, class Sink, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult submit_n_for(InputIt first, std::size_t n, Sink sink,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        auto store = Core::bulk_store(sink);
        return Core::submit_bulk(first, n, Core::wait_until_deadline, Core::deadline_after(timeout),
                                 store);
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
    Handle<R> submit(deadline_type deadline, U&& item) {
        Handle<R> handle;
        Core::throw_if_rejected(Core::submit_due_with_handle(deadline, std::forward<U>(item),
                                                             Core::wait_forever, {}, handle));
        return handle;
    }
    /// @brief `submit(item, callback)` with a deadline.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    void submit(deadline_type deadline, U&& item, F&& callback) {
        Core::throw_if_rejected(Core::submit_due(deadline, std::forward<U>(item),
                                                 Core::wait_forever, {},
                                                 Core::template emplacer<F>(callback)));
    }
    /// @brief `post(item)` with a deadline (an expired item is only counted).
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    void post(deadline_type deadline, U&& item) {
        Core::throw_if_rejected(Core::submit_due(deadline, std::forward<U>(item),
                                                 Core::wait_forever, {}, Core::no_completion));
    }
    /// @brief `try_submit(item)` with a deadline.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(deadline_type deadline, U&& item) {
        return Core::submit_due(deadline, std::forward<U>(item), Core::wait_never, {},
                                Core::no_completion);
    }
    /// @brief `try_submit(item, callback)` with a deadline.
    template <class U, class F,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus try_submit(deadline_type deadline, U&& item, F&& callback) {
        return Core::submit_due(deadline, std::forward<U>(item), Core::wait_never, {},
                                Core::template emplacer<F>(callback));
    }
    /// @brief `try_submit_handle(item)` with a deadline.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> try_submit_handle(deadline_type deadline, U&& item) {
        SubmitResult<R> result;
        result.status = Core::submit_due_with_handle(deadline, std::forward<U>(item),
                                                     Core::wait_never, {}, result.handle);
        return result;
    }
    /// @brief `submit_for(item, timeout)` with a deadline (@p timeout bounds the wait for space).
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(deadline_type deadline, U&& item,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_due(deadline, std::forward<U>(item), Core::wait_until_deadline,
                                Core::deadline_after(timeout), Core::no_completion);
    }
    /// @brief `submit_for(item, callback, timeout)` with a deadline.
    template <class U, class F, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                       !std::is_same_v<std::decay_t<F>, Handle<R>>>>
    [[nodiscard]] SubmitStatus submit_for(deadline_type deadline, U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_due(deadline, std::forward<U>(item), Core::wait_until_deadline,
                                Core::deadline_after(timeout),
                                Core::template emplacer<F>(callback));
    }
    /// @brief `submit_for_handle(item, timeout)` with a deadline.
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitResult<R> submit_for_handle(
        deadline_type deadline, U&& item, const std::chrono::duration<Rep, Period>& timeout) {
        SubmitResult<R> result;
        result.status =
            Core::submit_due_with_handle(deadline, std::forward<U>(item), Core::wait_until_deadline,
                                         Core::deadline_after(timeout), result.handle);
        return result;
    }
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
        Core::throw_if_bulk_rejected(Core::submit_bulk_due(deadline, first, n, Core::wait_forever,
                                                           {}, typename Core::BulkPostStore{}),
                                     n);
    }
    /// @brief `try_post_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_post_n(deadline_type deadline, InputIt first, std::size_t n) {
        return Core::submit_bulk_due(deadline, first, n, Core::wait_never, {},
                                     typename Core::BulkPostStore{});
    }
    /// @brief `post_n_for` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult post_n_for(deadline_type deadline, InputIt first, std::size_t n,
                                        const std::chrono::duration<Rep, Period>& timeout) {
        return Core::submit_bulk_due(deadline, first, n, Core::wait_until_deadline,
                                     Core::deadline_after(timeout), typename Core::BulkPostStore{});
    }
    /// @brief `submit_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    Sink submit_n(deadline_type deadline, InputIt first, std::size_t n, Sink sink) {
        auto store = Core::bulk_store(sink);
        Core::throw_if_bulk_rejected(
            Core::submit_bulk_due(deadline, first, n, Core::wait_forever, {}, store), n);
        return store.release();
    }
    /// @brief `try_submit_n` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult try_submit_n(deadline_type deadline, InputIt first, std::size_t n,
                                          Sink sink) {
        auto store = Core::bulk_store(sink);
        return Core::submit_bulk_due(deadline, first, n, Core::wait_never, {}, store);
    }
    /// @brief `submit_n_for` with a deadline for every item (see `post_n(deadline, ...)`).
    template <class InputIt, class Sink, class Rep, class Period,
              class = std::enable_if_t<is_item_iterator<InputIt>>>
    [[nodiscard]] BulkResult submit_n_for(deadline_type deadline, InputIt first, std::size_t n,
                                          Sink sink,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        auto store = Core::bulk_store(sink);
        return Core::submit_bulk_due(deadline, first, n, Core::wait_until_deadline,
                                     Core::deadline_after(timeout), store);
    }

    /**
     * @brief Dispatches the partial batch now (reason `flush`), if it holds any item.
     *        Never blocks (beyond handing the batch to the executor).
     */
    void flush() { Core::flush(); }

    /**
     * @brief Flushes, then blocks until every item accepted before the call has finished
     *        (its batch ran and its handle/callback completed). Items submitted concurrently may
     *        or may not be waited for.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks,
     *         also nested (see "Re-entrancy" above).
     */
    void wait_idle() { Core::wait_idle(); }

    /**
     * @brief Stops accepting items, dispatches the partial batch (reason `close`) and blocks
     *        until every accepted item has finished. Idempotent; concurrent calls all wait.
     *        Producers blocked in submit wake with `ClosedError`.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks,
     *         also nested (it would wait for itself; see "Re-entrancy" above).
     */
    void close() { Core::close_impl(nullptr); }

    /**
     * @brief Like `close()`, but gives up waiting after @p timeout and reports what was still
     *        in flight. The batcher stays closed; the remaining batches keep running and a
     *        later `close()` (or the destructor) waits for them.
     */
    template <class Rep, class Period>
    CloseResult close_for(const std::chrono::duration<Rep, Period>& timeout) {
        const auto deadline = Core::deadline_after(timeout);
        return Core::close_impl(&deadline);
    }

    /// @brief True once close() (or close_for) has begun.
    bool is_closed() const noexcept { return Core::is_closed(); }

    /**
     * @brief Producers blocked in a submit because their lane is full, or because
     *        `Options::max_pending_cost` is reached, queued to be admitted in arrival order
     *        (README "Deadlines", fair admission). Thread-safe; takes the mutexes blocked
     *        producers wait on; a snapshot.
     */
    std::size_t waiting_producers() const { return Core::waiting_producers(); }

    /// @brief A snapshot of the counters (see `Stats` for its consistency). Thread-safe, O(1).
    ///        Not lock-free: it reads the atomic counters, then copies the cost-model fit under
    ///        a mutex that workers hold briefly once per finished batch, so it may wait for one
    ///        (never for a submit: producers do not take that mutex).
    Stats stats() const noexcept { return Core::stats(); }

    /**
     * @brief Accepted items not yet finished: in the batch being filled, sealed and waiting,
     *        or running. Thread-safe, lock-free, O(lanes); a snapshot that may be stale by the
     *        time it returns.
     */
    std::size_t pending() const noexcept { return Core::pending(); }

    /**
     * @brief The total cost (`cost_by`) of accepted items not yet finished: the quantity
     *        `Options::max_pending_cost` bounds (0 without a cost function). An item's cost
     *        counts from its acceptance until its batch has completed every item. Thread-safe,
     *        lock-free, O(1); a snapshot.
     */
    std::size_t pending_cost() const noexcept {
        // relaxed: a snapshot; nothing is read through it.
        return static_cast<std::size_t>(Core::pending_cost_.load(std::memory_order_relaxed));
    }

    /**
     * @brief Batches dispatched and not yet finished: the count `max_in_flight` limits. A
     *        batch counts until its worker has completed every item and is about to take the
     *        next batch. Thread-safe, lock-free, O(1); a snapshot.
     */
    std::size_t in_flight() const noexcept { return Core::in_flight(); }

    /**
     * @brief Sets the batch size bound for batches opened from now on (the batch being filled
     *        keeps the bound it opened with). Thread-safe; lock-free.
     *
     * Storage stays what was reserved for the constructed `max_batch_size`: each batch still
     * occupies one buffer of that size, so with a smaller bound producers block after
     * ceil(capacity / constructed size) batches rather than after `capacity` items.
     * @throws std::invalid_argument unless 1 <= @p size <= the constructed max_batch_size.
     */
    void set_max_batch_size(std::size_t size) { Core::set_max_batch_size(size); }

    /**
     * @brief Sets the time bound; effective for every decision from now on (the batch being
     *        filled included). `nanoseconds::max()` disables it. Thread-safe; wakes the timer.
     * @throws std::invalid_argument if @p delay is negative.
     */
    void set_max_delay(std::chrono::nanoseconds delay) { Core::set_max_delay(delay); }

    /**
     * @brief Sets the in-flight limit (0 = automatic, as in Options::max_in_flight), effective
     *        for every decision from now on. Thread-safe; wakes the timer. Raising it above the
     *        value the batcher was built with can make producers block before `capacity` items
     *        (storage for partial batches was reserved for the constructed limit).
     */
    void set_max_in_flight(std::size_t limit) { Core::set_max_in_flight(limit); }

    /// @brief The batch size bound in force (see set_max_batch_size). Thread-safe.
    std::size_t max_batch_size() const noexcept { return Core::max_batch_size(); }
    /// @brief The time bound in force (`nanoseconds::max()` when disabled). Thread-safe.
    std::chrono::nanoseconds max_delay() const noexcept { return Core::max_delay(); }
    /// @brief The in-flight limit in force (resolved: never 0). Thread-safe.
    std::size_t max_in_flight() const noexcept { return Core::max_in_flight(); }

    /// @brief The options the batcher was built with.
    const Options& options() const noexcept { return Core::options_; }

    /// @brief The clock the batcher measures max_delay with.
    const Clock& clock() const noexcept { return Core::clock_; }
};

}  // namespace microbatch
