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

#if defined(__linux__) && __has_include(<sys/prctl.h>)
#include <sys/prctl.h>  // PR_SET_TIMERSLACK for the timer thread
#endif

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/detail/completion.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/options.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/stats.hpp"
#include "microbatch/thread_pool.hpp"

namespace microbatch {

/**
 * @brief What `Batcher::close_for` reports.
 */
struct CloseResult {
    bool completed = true;            ///< True if every accepted item finished before the timeout.
    std::size_t items_in_flight = 0;  ///< Accepted items not yet finished when it gave up.
    std::size_t batches_in_flight = 0;  ///< Batches not yet finished when it gave up.
};

namespace detail {

/// The batcher whose process_batch the current thread is running (re-entrancy detection).
inline thread_local const void* running_batcher = nullptr;

/// Hands out producer numbers; see producer_number().
inline std::atomic<std::uint32_t> next_producer_number{0};

/// This thread's producer number, drawn on its first submit to any batcher: consecutive
/// producer threads get consecutive numbers and so land in different lanes.
inline std::uint32_t producer_number() noexcept {
    // relaxed: only needs distinct values; nothing is published through the counter.
    static thread_local const std::uint32_t number =
        next_producer_number.fetch_add(1, std::memory_order_relaxed);
    return number;
}

/// Slot states, written by the producer that filled the slot, read by the worker.
enum SlotState : std::uint8_t {
    slot_empty = 0,            ///< Not written yet (the producer is still constructing it).
    slot_item = 1,             ///< Holds an item, no per-item completion.
    slot_item_completion = 2,  ///< Holds an item and a completion (callback or handle).
    slot_hole = 3,             ///< Constructing the item threw: the slot holds nothing.
};

/// Completion stored for a Handle: completes the shared state exactly once.
template <class R>
class HandleCompletion {
public:
    explicit HandleCompletion(HandleState<R>* state) noexcept : state_(state) {}
    HandleCompletion(HandleCompletion&& other) noexcept
        : state_(std::exchange(other.state_, nullptr)) {}
    HandleCompletion(const HandleCompletion&) = delete;
    HandleCompletion& operator=(const HandleCompletion&) = delete;
    HandleCompletion& operator=(HandleCompletion&&) = delete;
    ~HandleCompletion() {
        if (state_ != nullptr) {  // dropped without running: never leave a waiter hanging
            state_->set(Outcome<R>(
                std::make_exception_ptr(Error("microbatch: item dropped before completion"))));
            state_->release();
        }
    }
    void operator()(Outcome<R>&& outcome) noexcept {
        HandleState<R>* state = std::exchange(state_, nullptr);
        state->set(std::move(outcome));
        state->release();
    }

private:
    HandleState<R>* state_;
};

}  // namespace detail

/**
 * @brief Accumulates items into microbatches bounded by size (`max_batch_size`) and time
 *        (`max_delay`), and runs `process_batch` on each batch in a thread pool.
 *
 * @tparam T     the item type; may be move-only (e.g. `std::unique_ptr`).
 * @tparam R     the per-item result type: `process_batch` returns `std::vector<R>` with one
 *               result per item, in item order. With `R = void` (the default) it returns
 *               nothing and items only report success or failure.
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
 * see detail/handle_state.hpp); `submit(item, callback)` calls `callback(Outcome<R>)`
 * on the worker after the batch ran (no allocation: the callback is stored inline in the batch
 * slot and must fit `detail::Completion<R>::inline_size` bytes); `post(item)` and
 * `try_submit(item)` are fire-and-forget. Items are taken by forwarding reference and moved from
 * only when accepted: a rejected item is left as it was.
 *
 * **Backpressure.** At most `capacity` items (rounded up to whole batches per lane) are accepted
 * and not yet finished. When a producer's lane is full, `submit`/`post` block, `try_submit`
 * returns `SubmitStatus::full` at once, `submit_for` waits up to its timeout.
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
 * not accepted.
 *
 * **Shutdown.** `close()` stops accepting (later submits fail with `ClosedError`, and producers
 * blocked on a full batcher wake with it), dispatches the partial batch, and waits for every
 * accepted item to finish. It is idempotent and thread-safe; the destructor calls it.
 * No accepted item is lost or processed twice.
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
    /// What process_batch returns: `std::vector<R>`, or nothing for `R = void`.
    using batch_result_type = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    /// The stored batch function.
    using process_function = std::function<batch_result_type(Batch<T>&)>;

    /**
     * @brief Creates the batcher and starts its timer thread (unless max_delay is
     *        `nanoseconds::max()`) and, without an executor, its own pool of `workers` threads.
     *
     * @param options  validated here: `std::invalid_argument` naming the option and its value.
     * @param process  `process_batch`, called as `process(batch)` with a `Batch<T>&`; returns
     *                 `std::vector<R>` (one result per item) or, for `R = void`, nothing.
     * @param clock    the clock instance (a `ManualClock` handle in tests).
     * @throws std::invalid_argument on invalid options; `std::bad_alloc`, `std::system_error`.
     */
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Batcher>>>
    Batcher(Options options, F&& process, Clock clock = Clock{})
        : options_(std::move(options)), clock_(std::move(clock)) {
        static_assert(std::is_invocable_v<F&, Batch<T>&>,
                      "microbatch::Batcher: process_batch must be callable with "
                      "microbatch::Batch<T>&");
        if constexpr (std::is_void_v<R>) {
            static_assert(std::is_void_v<std::invoke_result_t<F&, Batch<T>&>>,
                          "microbatch::Batcher<T, void>: process_batch must return void; use "
                          "Batcher<T, R> for one result per item");
        } else {
            static_assert(
                std::is_convertible_v<std::invoke_result_t<F&, Batch<T>&>, std::vector<R>>,
                "microbatch::Batcher<T, R>: process_batch must return std::vector<R> with one "
                "result per item");
        }
        process_ = process_function(std::forward<F>(process));
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
     *         ReentrancyError if it would block inside this batcher's own process_batch;
     *         whatever constructing `T` from @p item throws; `std::bad_alloc`.
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
                                       std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>>>
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
                                       std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, F&& callback) {
        return submit_impl(std::forward<U>(item), wait_never, {}, emplacer<F>(callback));
    }

    /// @brief Like `try_submit(item)`; on acceptance @p handle receives the item's handle.
    template <class U, class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus try_submit(U&& item, Handle<R>& handle) {
        return submit_with_handle(std::forward<U>(item), wait_never, {}, handle);
    }

    /**
     * @brief Fire-and-forget, waiting at most @p timeout for space: `accepted`, `full` (timed
     *        out) or `closed`. The item is left untouched unless accepted.
     * @throws ReentrancyError if it would block inside this batcher's own process_batch.
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
                                       std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, F&& callback,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return submit_impl(std::forward<U>(item), wait_until_deadline, deadline_after(timeout),
                           emplacer<F>(callback));
    }

    /// @brief Like `submit_for(item, timeout)`; on acceptance @p handle receives the handle.
    template <class U, class Rep, class Period,
              class = std::enable_if_t<std::is_constructible_v<T, U&&>>>
    [[nodiscard]] SubmitStatus submit_for(U&& item, Handle<R>& handle,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        return submit_with_handle(std::forward<U>(item), wait_until_deadline,
                                  deadline_after(timeout), handle);
    }

    /**
     * @brief Dispatches the partial batch now (reason `flush`), if it holds any item.
     *        Never blocks (beyond handing the batch to the executor).
     */
    void flush() {
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            seal_current(lanes_[l], DispatchReason::flush, 0, false);
        }
    }

    /**
     * @brief Flushes, then blocks until every item accepted before the call has finished
     *        (its batch ran and its handle/callback completed). Items submitted concurrently may
     *        or may not be waited for.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks.
     */
    void wait_idle() {
        check_not_reentrant("wait_idle");
        flush();  // every lane's partial batch leaves now, so the lanes drain side by side
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            Lane& lane = lanes_[l];
            const std::uint64_t target = flush_and_target(lane);
            std::unique_lock<std::mutex> lock(idle_mutex_);
            ++idle_waiters_;
            idle_condition_.wait(lock, [&] { return finished_through(lane, target); });
            --idle_waiters_;
        }
    }

    /**
     * @brief Stops accepting items, dispatches the partial batch (reason `close`) and blocks
     *        until every accepted item has finished. Idempotent; concurrent calls all wait.
     *        Producers blocked in submit wake with `ClosedError`.
     * @throws ReentrancyError when called from inside this batcher's process_batch or callbacks
     *         (it would wait for itself).
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

    /// @brief A snapshot of the counters (see `Stats` for its consistency). Thread-safe,
    ///        lock-free, O(1).
    Stats stats() const noexcept {
        Stats result;
        std::uint64_t filling = 0;
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            // relaxed: a statistic; no data is read through it.
            const std::uint64_t head = lanes_[l].head.load(std::memory_order_relaxed);
            const std::uint64_t count = head & count_mask;
            const bool open = (head & closed_bit) == 0 && count < batch_size_;
            filling += open ? count : 0;
        }
        stats_.snapshot(result, filling);
        return result;
    }

    /// @brief The options the batcher was built with.
    const Options& options() const noexcept { return options_; }

    /// @brief The clock the batcher measures max_delay with.
    const Clock& clock() const noexcept { return clock_; }

private:
    // ---- The head word --------------------------------------------------------------------
    // One 64-bit atomic per lane describes the lane's batch being filled, so a producer claims a
    // slot with a single fetch_add: [closed:1][tag:23][buffer:16][count:24]. `count` is the
    // number of slots claimed in buffer `buffer` (an index into buffers_, which all lanes
    // share); values >= batch_size_ mean "not accepting" (sealed, awaiting a free buffer, or
    // closed). `tag` is the batch's lane sequence number modulo 2^23 and defends the
    // compare-exchanges of the timer and flush against ABA on a reused buffer.
    static constexpr unsigned buffer_shift = 24;
    static constexpr unsigned tag_shift = 40;
    static constexpr std::uint64_t count_mask = (std::uint64_t{1} << buffer_shift) - 1;
    static constexpr std::uint64_t buffer_mask = 0xFFFF;
    static constexpr std::uint64_t tag_mask = (std::uint64_t{1} << 23) - 1;
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    // Count stored by partial seals; above any batch size (<= 2^22) with ample room for the
    // stray increments of producers that arrive while a batch is sealed.
    static constexpr std::uint64_t sealed_count = std::uint64_t{1} << 23;
    static constexpr std::size_t max_buffers = buffer_mask + 1;
    static constexpr std::int64_t unset_time = std::numeric_limits<std::int64_t>::min();

    static std::uint64_t make_head(std::uint64_t sequence, std::uint64_t buffer) noexcept {
        return ((sequence & tag_mask) << tag_shift) | (buffer << buffer_shift);
    }
    static std::uint32_t buffer_of(std::uint64_t head) noexcept {
        return static_cast<std::uint32_t>((head >> buffer_shift) & buffer_mask);
    }
    static std::uint64_t tag_of(std::uint64_t head) noexcept {
        return (head >> tag_shift) & tag_mask;
    }

    // ---- Lanes and batch buffers ----------------------------------------------------------
    // Each lane owns a ring of buffers_per_lane_ consecutive buffers. A buffer's life: opened
    // (published in its lane's head) -> filled by producers -> sealed (by the producer that
    // took the last slot, the timer, flush or close) -> run by a worker -> finished -> reopened
    // once its predecessor in its lane's round-robin order has been sealed too. Lane batch
    // number s always uses the lane's buffer s % buffers_per_lane_.
    struct Lane {
        // Every producer of the lane hits head: it has a cache line to itself.
        alignas(detail::cache_line_size) std::atomic<std::uint64_t> head{0};
        alignas(detail::cache_line_size) std::atomic<std::uint64_t> next_sequence{0};
        std::uint32_t first_buffer = 0;  // index in buffers_ of the lane's buffer 0
    };

    struct alignas(detail::cache_line_size) Buffer {
        std::atomic<std::int64_t> opened_at{unset_time};  // clock ticks when slot 0 was claimed
        std::atomic<std::uint64_t> sequence{0};           // batch number of the current use
        std::atomic<std::uint64_t> finished_sequence{0};  // batch number of the last finished use
        std::atomic<std::uint32_t> arrivals{0};           // "free" + "predecessor sealed" events
        std::atomic<std::uint32_t> finish_parties{0};     // worker + poster, see finish_party()
        // Written by the sealer before the batch is handed to the executor, read by the worker.
        std::uint32_t size = 0;
        DispatchReason reason = DispatchReason::full;
        std::int64_t dispatched_at = 0;
        std::uint64_t number = 0;  // Batch::sequence(): the batcher-wide dispatch number
    };

    enum WaitMode { wait_never, wait_forever, wait_until_deadline };
    using Deadline = std::chrono::steady_clock::time_point;

    template <class Rep, class Period>
    static Deadline deadline_after(const std::chrono::duration<Rep, Period>& timeout) {
        const auto now = std::chrono::steady_clock::now();
        if (timeout <= std::chrono::duration<Rep, Period>::zero()) {
            return now;
        }
        // Compared in floating point so that huge timeouts saturate instead of overflowing.
        if (std::chrono::duration<double>(timeout) >=
            std::chrono::duration<double>(Deadline::max() - now)) {
            return Deadline::max();
        }
        return now + std::chrono::ceil<Deadline::duration>(timeout);
    }

    struct ItemsDeleter {
        std::size_t count;
        void operator()(T* items) const noexcept { std::allocator<T>().deallocate(items, count); }
    };

    void initialise() {
        options_.validate();
        batch_size_ = static_cast<std::uint32_t>(options_.max_batch_size());
        lane_count_ = static_cast<std::uint32_t>(options_.lanes());
        const std::size_t capacity = options_.effective_capacity();
        // Rounded up without overflow, even for a capacity near SIZE_MAX.
        const std::size_t batches = capacity / batch_size_ + (capacity % batch_size_ != 0);
        const std::size_t per_lane = batches / lane_count_ + (batches % lane_count_ != 0);
        const std::size_t buffers = per_lane <= max_buffers ? per_lane * lane_count_ : 0;
        if (buffers == 0 || buffers > max_buffers) {
            MICROBATCH_THROW(std::invalid_argument(
                "microbatch::Options: capacity / max_batch_size must be <= " +
                std::to_string(max_buffers) + " batches in all lanes (got capacity " +
                std::to_string(capacity) + ", max_batch_size " + std::to_string(batch_size_) +
                ", lanes " + std::to_string(lane_count_) + ")"));
        }
        buffers_per_lane_ = static_cast<std::uint32_t>(per_lane);
        const std::size_t slots = buffers * batch_size_;
        items_ = std::unique_ptr<T, ItemsDeleter>(std::allocator<T>().allocate(slots),
                                                  ItemsDeleter{slots});
        completions_ = std::make_unique<detail::Completion<R>[]>(slots);
        slot_states_ = std::make_unique<std::atomic<std::uint8_t>[]>(slots);  // zeroed
        buffers_ = std::make_unique<Buffer[]>(buffers);
        lanes_ = std::make_unique<Lane[]>(lane_count_);
        // Lane batch numbers start at n = buffers_per_lane_, so "lane batch s finished" can be
        // tested as the lane's buffer s % n having finished_sequence >= s for every s, including
        // the virtual batches 0..n-1 that stand for "this buffer has never been used".
        // relaxed stores below: no other thread sees the batcher yet; starting the timer thread
        // (and the caller sharing the constructed batcher) publishes them.
        const std::uint32_t n = buffers_per_lane_;
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            Lane& lane = lanes_[l];
            lane.first_buffer = l * n;
            for (std::uint32_t b = 0; b < n; ++b) {
                Buffer& buffer = buffers_[lane.first_buffer + b];
                buffer.finished_sequence.store(b, std::memory_order_relaxed);
                buffer.arrivals.store(b == 0 ? 0 : 1, std::memory_order_relaxed);
            }
            buffers_[lane.first_buffer].sequence.store(n, std::memory_order_relaxed);
            lane.next_sequence.store(n + 1, std::memory_order_relaxed);
            lane.head.store(make_head(n, lane.first_buffer), std::memory_order_relaxed);
        }
        open_batches_ = lane_count_;

        const auto delay = options_.max_delay();
        if (delay == std::chrono::nanoseconds::max()) {
            max_delay_ticks_ = -1;  // no time bound: no timer thread at all
        } else {
            max_delay_ticks_ = std::chrono::ceil<typename Clock::duration>(delay).count();
        }

        if (options_.executor()) {
            executor_ = options_.executor();
        } else {
            pool_ = std::make_unique<ThreadPool>(options_.workers());
            executor_ = pool_->executor();
        }
        if (max_delay_ticks_ >= 0) {
            sleeper_.emplace(clock_, timer_mutex_, timer_condition_);
            timer_ = std::thread([this] { run_timer(); });
        }
    }

    // ---- Submission -----------------------------------------------------------------------

    static bool no_completion(detail::Completion<R>&) noexcept { return false; }

    // Stores the callback (moved if the caller passed an rvalue, copied otherwise).
    template <class F>
    static auto emplacer(std::remove_reference_t<F>& callback) {
        return [&callback](detail::Completion<R>& slot) {
            slot.emplace(std::forward<F>(callback));
            return true;
        };
    }

    template <class U>
    SubmitStatus submit_with_handle(U&& item, WaitMode mode, Deadline deadline, Handle<R>& out) {
        // The handle owns one reference; the slot's completion gets the other on acceptance.
        Handle<R> handle(detail::HandleState<R>::create());
        struct Unclaimed {  // releases the slot's reference if it was never handed out
            detail::HandleState<R>* state;
            ~Unclaimed() {
                if (state != nullptr) {
                    state->release();
                }
            }
        } unclaimed{handle.state_};
        const auto store = [&unclaimed](detail::Completion<R>& slot) noexcept {
            slot.emplace(detail::HandleCompletion<R>(std::exchange(unclaimed.state, nullptr)));
            return true;
        };
        const SubmitStatus status = submit_impl(std::forward<U>(item), mode, deadline, store);
        if (status == SubmitStatus::accepted) {
            out = std::move(handle);
        }
        return status;
    }

    void throw_if_rejected(SubmitStatus status) const {
        if (status == SubmitStatus::closed) {
            MICROBATCH_THROW(ClosedError("microbatch::Batcher: submit on a closed batcher"));
        }
    }

    // The calling thread's lane: fixed per thread, so one producer's items stay in order.
    Lane& lane_for_this_thread() const noexcept {
        return lane_count_ == 1 ? lanes_[0] : lanes_[detail::producer_number() % lane_count_];
    }

    template <class U, class Store>
    SubmitStatus submit_impl(U&& item, WaitMode mode, Deadline deadline, Store&& store) {
        Lane& lane = lane_for_this_thread();
        for (;;) {
            // Test before claiming: a claim on a sealed or closed head is a stray increment of
            // the 24-bit count, and an unbounded run of them (a producer polling try_submit on
            // a full or closed batcher) would carry into the buffer field. relaxed: only a
            // filter; the fetch_add below decides.
            const std::uint64_t seen = lane.head.load(std::memory_order_relaxed);
            if ((seen & count_mask) < batch_size_ && (seen & closed_bit) == 0) {
                // seq_cst: claims a slot; also orders the claim before the opened_at/timer_idle_
                // handshake in note_batch_opened (free on x86, where every RMW is a full fence).
                const std::uint64_t head = lane.head.fetch_add(1, std::memory_order_seq_cst);
                const std::uint32_t index = static_cast<std::uint32_t>(head & count_mask);
                if (index < batch_size_) {
                    return fill_slot(head, index, std::forward<U>(item), store);
                }
            }
            const SubmitStatus status = wait_for_space(lane, mode, deadline);
            if (status != SubmitStatus::accepted) {
                return status;  // counted in wait_for_space
            }
            // accepted here means "a batch is open again": claim anew.
        }
    }

    template <class U, class Store>
    SubmitStatus fill_slot(std::uint64_t head, std::uint32_t index, U&& item, Store& store) {
        const std::uint32_t buffer = buffer_of(head);
        const std::size_t slot = static_cast<std::size_t>(buffer) * batch_size_ + index;
        if (index == 0) {
            // With max_batch_size 1 this very claim seals the batch: no deadline to time.
            note_batch_opened(buffers_[buffer], index + 1 < batch_size_);
        }
        T* place = items_.get() + slot;
        detail::Completion<R>& completion = completions_[slot];
        std::uint8_t state = detail::slot_item;
        std::exception_ptr error;
        if constexpr (std::is_nothrow_constructible_v<T, U&&> &&
                      std::is_nothrow_invocable_v<Store&, detail::Completion<R>&>) {
            if (store(completion)) {
                state = detail::slot_item_completion;
            }
            ::new (static_cast<void*>(place)) T(std::forward<U>(item));
        } else {
            // The completion first: if storing it throws, the item has not been touched yet.
            try {
                if (store(completion)) {
                    state = detail::slot_item_completion;
                }
                try {
                    ::new (static_cast<void*>(place)) T(std::forward<U>(item));
                } catch (...) {
                    completion.reset();  // never invoked: the item was not accepted
                    throw;
                }
            } catch (...) {
                // The slot is claimed and must still be published, or the batch would wait for
                // it forever: publish a hole, which the worker skips.
                error = std::current_exception();
                state = detail::slot_hole;
            }
        }
        // release: publishes the item and completion to the worker that runs this batch.
        slot_states_[slot].store(state, std::memory_order_release);
        if (index + 1 == batch_size_) {
            seal_and_dispatch(buffer, batch_size_, DispatchReason::full);
        }
        if (error) {
            stats_.rejected_error();
            std::rethrow_exception(error);
        }
        return SubmitStatus::accepted;
    }

    // The producer of slot 0 stamps the batch's start time and wakes an idle timer.
    void note_batch_opened(Buffer& buffer, bool needs_timer) {
        // seq_cst (store and load): a Dekker handshake with run_timer(), which sets
        // timer_idle_ and then re-reads the heads and opened_at; one side always sees the other.
        buffer.opened_at.store(clock_.now().time_since_epoch().count(), std::memory_order_seq_cst);
        if (needs_timer && max_delay_ticks_ >= 0 && timer_idle_.load(std::memory_order_seq_cst)) {
            { std::lock_guard<std::mutex> lock(timer_mutex_); }
            timer_condition_.notify_one();
        }
    }

    // Waits until a batch is open again (returns accepted), the batcher closed, or the mode's
    // patience runs out (full). Rejections are counted here, while this producer is still
    // registered: close() may let the batcher be destroyed as soon as it has left.
    SubmitStatus wait_for_space(Lane& lane, WaitMode mode, Deadline deadline) {
        const SubmitStatus status = wait_for_space_registered(lane, mode, deadline);
        slow_producers_.fetch_sub(1, std::memory_order_release);  // our last touch: see close
        return status;
    }

    SubmitStatus wait_for_space_registered(Lane& lane, WaitMode mode, Deadline deadline) {
        // Registered so that close() can wait for blocked producers to leave before the
        // batcher is destroyed.
        slow_producers_.fetch_add(1, std::memory_order_seq_cst);
        struct Leave {  // on exceptions only; the normal path leaves in wait_for_space
            std::atomic<std::uint32_t>& count;
            bool armed = true;
            // release: our last touch of the batcher happens-before close() sees zero.
            ~Leave() {
                if (armed) {
                    count.fetch_sub(1, std::memory_order_release);
                }
            }
        } leave{slow_producers_};
        const auto finish = [&](SubmitStatus status) {
            if (status == SubmitStatus::full) {
                stats_.rejected_full();
            } else if (status == SubmitStatus::closed) {
                stats_.rejected_closed();
            }
            leave.armed = false;
            return status;
        };

        // A batch hand-over (seal, then open the next buffer) takes nanoseconds when the next
        // buffer is free: spin briefly before treating the batcher as full.
        const int spins = mode == wait_never ? 32 : 256;
        for (int spin = 0; spin < spins; ++spin) {
            // acquire: a batch we see open must be fully reset before we write into it.
            const std::uint64_t head = lane.head.load(std::memory_order_acquire);
            if ((head & closed_bit) != 0) {
                return finish(SubmitStatus::closed);
            }
            if ((head & count_mask) < batch_size_) {
                return finish(SubmitStatus::accepted);
            }
            if (spin >= 64) {
                std::this_thread::yield();
            } else {
                detail::cpu_relax();
            }
        }
        if (mode == wait_never) {
            return finish(SubmitStatus::full);
        }
        if (detail::running_batcher == this) {
            MICROBATCH_THROW(ReentrancyError(
                "microbatch::Batcher: blocking submit from inside process_batch found the "
                "batcher full (it could wait for its own batch); use try_submit"));
        }
        std::unique_lock<std::mutex> lock(space_mutex_);
        // seq_cst: Dekker handshake with open_buffer(), which publishes the head then reads this.
        space_waiters_.fetch_add(1, std::memory_order_seq_cst);
        SubmitStatus status = SubmitStatus::full;
        for (;;) {
            const std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
            if ((head & closed_bit) != 0) {
                status = SubmitStatus::closed;
                break;
            }
            if ((head & count_mask) < batch_size_) {
                status = SubmitStatus::accepted;
                break;
            }
            if (mode == wait_forever) {
                space_condition_.wait(lock);
            } else if (space_condition_.wait_until(lock, deadline) == std::cv_status::timeout) {
                const std::uint64_t last = lane.head.load(std::memory_order_seq_cst);
                status = (last & closed_bit) != 0            ? SubmitStatus::closed
                         : (last & count_mask) < batch_size_ ? SubmitStatus::accepted
                                                             : SubmitStatus::full;
                break;
            }
        }
        // relaxed: only a hint for open_buffer(); a stale non-zero costs one spare notify.
        space_waiters_.fetch_sub(1, std::memory_order_relaxed);
        lock.unlock();
        return finish(status);
    }

    // ---- Sealing and dispatch -------------------------------------------------------------

    // Seals @p lane's batch being filled if it holds items. With @p only_tagged, only if it is
    // still the batch whose head (without the count) was @p expected. Returns true if it sealed.
    bool seal_current(Lane& lane, DispatchReason reason, std::uint64_t expected, bool only_tagged) {
        // acquire: the buffer we may seal must be read after its opening.
        std::uint64_t head = lane.head.load(std::memory_order_acquire);
        for (;;) {
            const std::uint64_t count = head & count_mask;
            if ((head & closed_bit) != 0 || count == 0 || count >= batch_size_) {
                return false;
            }
            if (only_tagged && (head & ~count_mask) != expected) {
                return false;
            }
            const std::uint64_t sealed = (head & ~count_mask) | sealed_count;
            // seq_cst: competes with producers' claims; whoever wins decides the batch size.
            if (lane.head.compare_exchange_weak(head, sealed, std::memory_order_seq_cst,
                                                std::memory_order_acquire)) {
                seal_and_dispatch(buffer_of(head), static_cast<std::uint32_t>(count), reason);
                return true;
            }
        }
    }

    // Called exactly once per batch by whoever sealed it, with its final size.
    void seal_and_dispatch(std::uint32_t buffer, std::uint32_t size, DispatchReason reason) {
        Buffer& current = buffers_[buffer];
        current.size = size;
        current.reason = reason;
        current.dispatched_at = clock_.now().time_since_epoch().count();
        // relaxed: distinct numbers suffice; the lane's next batch is numbered only after the
        // arrive() below opened it, so numbers grow along each lane.
        current.number = dispatched_batches_.fetch_add(1, std::memory_order_relaxed);
        stats_.dispatched(size, reason);
        // relaxed: a statistic for close_for(); nothing is published through it.
        in_flight_items_.fetch_add(size, std::memory_order_relaxed);
        // The lane's next buffer may open as soon as it is free: let producers go on.
        const std::uint32_t local = buffer % buffers_per_lane_;
        arrive(local + 1 == buffers_per_lane_ ? buffer - local : buffer + 1);
        post_batch(buffer);
    }

    void post_batch(std::uint32_t buffer) {
        bool posted = false;
        try {
            executor_([this, buffer] {
                run_batch(buffer);
                finish_party(buffer);
            });
            posted = true;
        } catch (...) {
            // The executor refused the task (e.g. its pool is shutting down): run the batch
            // here rather than lose it.
        }
        if (!posted) {
            run_batch(buffer);
            finish_party(buffer);
        }
        finish_party(buffer);
    }

    // Registers one of two events that free buffer @p index for its next batch: "its last
    // batch finished" and "the batch before it in round-robin order was sealed". The second
    // arrival opens it.
    void arrive(std::uint32_t index) {
        Buffer& buffer = buffers_[index];
        // acq_rel: the opener must see the finished batch's cleanup (slot states reset, items
        // destroyed) and the sealer's writes, whichever arrived first.
        if (buffer.arrivals.fetch_add(1, std::memory_order_acq_rel) == 1) {
            buffer.arrivals.store(0, std::memory_order_relaxed);  // published by the open below
            open_buffer(index);
        }
    }

    void open_buffer(std::uint32_t index) {
        Buffer& buffer = buffers_[index];
        Lane& lane = lanes_[index / buffers_per_lane_];
        // A lane's openings are serialised by the seal -> arrive -> open chain, so the relaxed
        // increment still hands out consecutive numbers, and sequence % buffers_per_lane_ is the
        // buffer's place in the lane's ring.
        const std::uint64_t sequence = lane.next_sequence.fetch_add(1, std::memory_order_relaxed);
        // relaxed stores: published to producers by the release CAS on the head below.
        buffer.sequence.store(sequence, std::memory_order_relaxed);
        buffer.opened_at.store(unset_time, std::memory_order_relaxed);
        buffer.finish_parties.store(0, std::memory_order_relaxed);
        // relaxed: the count is only compared under idle_mutex_ after the decrements, which
        // are all ordered after this increment by the batch chain.
        open_batches_.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t head = lane.head.load(std::memory_order_relaxed);
        for (;;) {
            if ((head & closed_bit) != 0) {
                // Closed meanwhile: this batch will never be used.
                retire_unused(buffer);
                return;
            }
            // seq_cst: publishes the reset buffer (release) and takes part in the Dekker
            // handshake with blocked producers (space_waiters_ below).
            if (lane.head.compare_exchange_weak(head, make_head(sequence, index),
                                                std::memory_order_seq_cst,
                                                std::memory_order_relaxed)) {
                break;
            }
        }
        if (space_waiters_.load(std::memory_order_seq_cst) != 0) {
            { std::lock_guard<std::mutex> lock(space_mutex_); }
            space_condition_.notify_all();
        }
    }

    // A batch that was opened but will never hold items (the batcher closed): account for it
    // as finished.
    void retire_unused(Buffer& buffer) {
        std::lock_guard<std::mutex> lock(idle_mutex_);
        mark_finished(buffer, buffer.sequence.load(std::memory_order_relaxed));
        --open_batches_;
        idle_condition_.notify_all();
    }

    // Records that batch @p sequence of @p buffer finished. Called with idle_mutex_ held.
    // Monotonic: once arrive() has reopened the buffer, its next batch may finish (and record
    // itself) before the thread finishing the previous one gets here; never go backwards.
    static void mark_finished(Buffer& buffer, std::uint64_t sequence) noexcept {
        // relaxed load: every store happens under idle_mutex_, which we hold. release store:
        // wait_idle() acquires it to learn the batch's items have finished.
        if (buffer.finished_sequence.load(std::memory_order_relaxed) < sequence) {
            buffer.finished_sequence.store(sequence, std::memory_order_release);
        }
    }

    // ---- Running a batch ------------------------------------------------------------------

    void run_batch(std::uint32_t buffer_index) noexcept {
        Buffer& buffer = buffers_[buffer_index];
        const std::size_t first = static_cast<std::size_t>(buffer_index) * batch_size_;
        T* items = items_.get() + first;
        detail::Completion<R>* completions = completions_.get() + first;
        std::atomic<std::uint8_t>* states = slot_states_.get() + first;
        const std::size_t size = buffer.size;

        const void* const outer = detail::running_batcher;
        detail::running_batcher = this;

        // Producers that claimed a slot may still be writing it: wait for each slot's state.
        std::size_t holes = 0;
        bool any_completion = false;
        for (std::size_t i = 0; i < size; ++i) {
            const std::uint8_t state = wait_for_slot(states[i]);
            holes += state == detail::slot_hole ? 1 : 0;
            any_completion = any_completion || state == detail::slot_item_completion;
        }
        std::size_t failed_in_compaction = 0;
        const std::size_t count =
            holes == 0 ? size : compact(items, completions, states, size, failed_in_compaction);

        // acquire not needed: opened_at was written by the slot-0 producer before its slot
        // state, which we acquired above.
        const std::int64_t opened_at = buffer.opened_at.load(std::memory_order_relaxed);
        const std::int64_t queue_delay =
            opened_at == unset_time ? 0 : to_nanoseconds(buffer.dispatched_at - opened_at);

        std::exception_ptr error;
        [[maybe_unused]] batch_result_type_or_empty results{};
        const auto started = clock_.now();
        if (count != 0) {
            Batch<T> batch(items, count, buffer.reason, buffer.number);
            try {
                if constexpr (std::is_void_v<R>) {
                    process_(batch);
                } else {
                    results = process_(batch);
                    if (results.size() != count) {
                        error = std::make_exception_ptr(ResultCountError(
                            "microbatch::Batcher: process_batch returned " +
                            std::to_string(results.size()) + " results for a batch of " +
                            std::to_string(count) + " items"));
                    }
                }
            } catch (...) {
                error = std::current_exception();
            }
        }
        const auto processing = to_nanoseconds((clock_.now() - started).count());

        const bool batch_failed = static_cast<bool>(error);
        // Stats first: a producer that sees its item's result then also sees it counted.
        if (holes != 0) {
            stats_.holes(holes);
        }
        const std::size_t failed = (batch_failed ? count : 0) + failed_in_compaction;
        stats_.completed(count - (batch_failed ? count : 0), failed, batch_failed, queue_delay,
                         processing);
        if (any_completion) {
            std::size_t last = count;
            for (std::size_t i = count; i-- > 0;) {
                if (completions[i].has_value()) {
                    last = i;
                    break;
                }
            }
            for (std::size_t i = 0; i < count; ++i) {
                if (completions[i].has_value()) {
                    // The last completion takes our reference to the exception: this thread must
                    // not drop a reference after publishing the others. (exception_ptr counts
                    // references inside libstdc++, which ThreadSanitizer cannot see, so a late
                    // release here would be reported as a race with the consumer.)
                    complete(completions[i], i == last ? std::move(error) : error, results, i);
                }
            }
        }
        if constexpr (!std::is_trivially_destructible_v<T>) {
            for (std::size_t i = 0; i < count; ++i) {
                items[i].~T();
            }
        }
        for (std::size_t i = 0; i < size; ++i) {
            // relaxed: published to the next producers by arrive()'s acq_rel and the open CAS.
            states[i].store(detail::slot_empty, std::memory_order_relaxed);
        }
        in_flight_items_.fetch_sub(size, std::memory_order_relaxed);
        detail::running_batcher = outer;
    }

    using batch_result_type_or_empty =
        std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>;

    void complete(detail::Completion<R>& completion, std::exception_ptr error,
                  batch_result_type_or_empty& results, std::size_t index) noexcept {
        std::optional<Outcome<R>> outcome;
        if (error) {
            outcome.emplace(std::move(error));
        } else if constexpr (std::is_void_v<R>) {
            outcome.emplace();
        } else {
            try {
                outcome.emplace(std::move(results[index]));
            } catch (...) {
                // Moving the result threw: the item gets that exception instead.
                outcome.emplace(std::current_exception());
            }
        }
        try {
            completion.complete(std::move(*outcome));
        } catch (...) {
            stats_.callback_exception();
        }
    }

    static std::uint8_t wait_for_slot(std::atomic<std::uint8_t>& state) noexcept {
        for (int spin = 0;; ++spin) {
            // acquire: pairs with the producer's release so its item is visible.
            const std::uint8_t value = state.load(std::memory_order_acquire);
            if (value != detail::slot_empty) {
                return value;
            }
            if (spin < 128) {
                detail::cpu_relax();
            } else {
                std::this_thread::yield();  // the producer was preempted mid-write
            }
        }
    }

    // Closes the holes left by failed constructions so the batch is contiguous again. An item
    // whose move constructor throws here fails with that exception (reported through its
    // completion) instead of being processed.
    std::size_t compact(T* items, detail::Completion<R>* completions,
                        std::atomic<std::uint8_t>* states, std::size_t size,
                        std::size_t& failed) noexcept {
        std::size_t kept = 0;
        for (std::size_t i = 0; i < size; ++i) {
            if (states[i].load(std::memory_order_relaxed) == detail::slot_hole) {
                continue;
            }
            if (kept != i) {
                try {
                    ::new (static_cast<void*>(items + kept)) T(std::move(items[i]));
                } catch (...) {
                    const std::exception_ptr error = std::current_exception();
                    items[i].~T();
                    ++failed;
                    if (completions[i].has_value()) {
                        try {
                            completions[i].complete(Outcome<R>(error));
                        } catch (...) {
                            stats_.callback_exception();
                        }
                    }
                    continue;
                }
                items[i].~T();
                if (completions[i].has_value()) {
                    completions[kept].take(completions[i]);
                }
            }
            ++kept;
        }
        return kept;
    }

    // Two parties finish a batch: the task that ran it and the thread that posted it (which
    // may still be inside the executor call when the batch is done). The second one frees the
    // buffer, so neither touches it, nor the batcher, after the batcher could be destroyed.
    void finish_party(std::uint32_t index) noexcept {
        Buffer& buffer = buffers_[index];
        // acq_rel: the second party must see everything the first did.
        if (buffer.finish_parties.fetch_add(1, std::memory_order_acq_rel) == 0) {
            return;
        }
        const std::uint64_t sequence = buffer.sequence.load(std::memory_order_relaxed);
        arrive(index);
        std::lock_guard<std::mutex> lock(idle_mutex_);
        mark_finished(buffer, sequence);
        --open_batches_;
        if (idle_waiters_ != 0) {
            idle_condition_.notify_all();
        }
    }

    // ---- Timer ----------------------------------------------------------------------------

    void run_timer() {
#if defined(__linux__) && __has_include(<sys/prctl.h>)
        // Linux lets a sleeping thread's timer fire up to 50 us late by default (timer slack);
        // this thread exists to wake on time, so ask for 1 ns. Affects only this thread.
        ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
        std::unique_lock<std::mutex> lock(timer_mutex_);
        while (!timer_stop_) {
            std::uint64_t head = 0;
            std::int64_t deadline = 0;
            if (Lane* lane = earliest_deadline(head, deadline)) {
                if (clock_.now().time_since_epoch().count() >= deadline) {
                    // Unlocked: dispatching may run the batch inline (an inline executor), and
                    // its submits may need to wake this timer.
                    lock.unlock();
                    seal_current(*lane, DispatchReason::deadline, head & ~count_mask, true);
                    lock.lock();
                } else if (deadline == std::numeric_limits<std::int64_t>::max()) {
                    sleeper_->sleep(lock);
                } else {
                    sleeper_->sleep_until(
                        lock, typename Clock::time_point(typename Clock::duration(deadline)));
                }
                continue;
            }
            // Nothing to time: sleep until a producer opens a batch. seq_cst: Dekker handshake
            // with note_batch_opened(); re-check after announcing we are idle.
            timer_idle_.store(true, std::memory_order_seq_cst);
            if (earliest_deadline(head, deadline) != nullptr) {
                timer_idle_.store(false, std::memory_order_relaxed);
                continue;
            }
            sleeper_->sleep(lock);
            // relaxed: only producers read it, as a hint protected by the handshake above.
            timer_idle_.store(false, std::memory_order_relaxed);
        }
        sleeper_->retire();
    }

    // The lane whose batch being filled is due first (nullptr if none holds items with a known
    // start time), with that batch's head and deadline.
    Lane* earliest_deadline(std::uint64_t& head, std::int64_t& deadline) const noexcept {
        Lane* earliest = nullptr;
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            std::uint64_t lane_head = 0;
            std::int64_t opened_at = unset_time;
            if (!current_batch_start(lanes_[l], lane_head, opened_at)) {
                continue;
            }
            const std::int64_t due =
                opened_at > std::numeric_limits<std::int64_t>::max() - max_delay_ticks_
                    ? std::numeric_limits<std::int64_t>::max()
                    : opened_at + max_delay_ticks_;
            if (earliest == nullptr || due < deadline) {
                earliest = &lanes_[l];
                head = lane_head;
                deadline = due;
            }
        }
        return earliest;
    }

    // True if @p lane's batch being filled holds items whose start time is known.
    bool current_batch_start(const Lane& lane, std::uint64_t& head,
                             std::int64_t& opened_at) const noexcept {
        head = lane.head.load(std::memory_order_seq_cst);
        const std::uint64_t count = head & count_mask;
        if ((head & closed_bit) != 0 || count == 0 || count >= batch_size_) {
            return false;
        }
        opened_at = buffers_[buffer_of(head)].opened_at.load(std::memory_order_seq_cst);
        return opened_at != unset_time;
    }

    // ---- Idle and close -------------------------------------------------------------------

    // Seals @p lane's batch being filled (if it holds items) and returns the lane number of the
    // lane's last batch holding items accepted before the call.
    std::uint64_t flush_and_target(Lane& lane) {
        for (;;) {
            const std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
            if ((head & closed_bit) != 0) {
                // Closed: no batch opens any more, and every opened one is sealed or retired
                // (a reopened-then-retired buffer no longer matches the head's tag, so the
                // check below would never succeed). Wait for everything opened so far.
                // relaxed: every opening incremented next_sequence before its CAS on head, and
                // our seq_cst load of head above already synchronised with those CASes.
                return lane.next_sequence.load(std::memory_order_relaxed) - 1;
            }
            const Buffer& buffer = buffers_[buffer_of(head)];
            const std::uint64_t sequence = buffer.sequence.load(std::memory_order_acquire);
            if ((sequence & tag_mask) != tag_of(head)) {
                continue;  // the buffer was reopened since we read the head: read again
            }
            const std::uint64_t count = head & count_mask;
            if ((head & closed_bit) == 0 && count == 0) {
                return sequence - 1;  // open and empty: everything before it
            }
            if ((head & closed_bit) == 0 && count < batch_size_ &&
                !seal_current(lane, DispatchReason::flush, head & ~count_mask, true)) {
                continue;  // a producer or the timer changed it first: look again
            }
            return sequence;
        }
    }

    // True if @p lane's batches up to lane number @p target have finished. Called with
    // idle_mutex_ held.
    bool finished_through(const Lane& lane, std::uint64_t target) const noexcept {
        const std::uint32_t n = buffers_per_lane_;
        for (std::uint64_t s = target + 1 - n; s <= target; ++s) {
            const Buffer& buffer = buffers_[lane.first_buffer + s % n];
            // acquire: pairs with mark_finished()'s release.
            if (buffer.finished_sequence.load(std::memory_order_acquire) < s) {
                return false;
            }
        }
        return true;
    }

    void check_not_reentrant(const char* what) const {
        if (detail::running_batcher == this) {
            MICROBATCH_THROW(ReentrancyError(std::string("microbatch::Batcher: ") + what +
                                             "() called from inside this batcher's "
                                             "process_batch or callback would wait for itself"));
        }
    }

    CloseResult close_impl(const Deadline* deadline) {
        check_not_reentrant("close");
        std::unique_lock<std::mutex> close_lock(close_mutex_);
        if (!close_started_) {
            close_started_ = true;
            begin_close();
        }
        close_lock.unlock();

        std::unique_lock<std::mutex> lock(idle_mutex_);
        ++idle_waiters_;
        const auto done = [this] { return open_batches_ == 0; };
        bool finished = true;
        if (deadline == nullptr) {
            idle_condition_.wait(lock, done);
        } else {
            finished = idle_condition_.wait_until(lock, *deadline, done);
        }
        --idle_waiters_;
        if (!finished) {
            CloseResult result;
            result.completed = false;
            result.batches_in_flight = static_cast<std::size_t>(open_batches_);
            result.items_in_flight =
                static_cast<std::size_t>(in_flight_items_.load(std::memory_order_relaxed));
            return result;
        }
        lock.unlock();
        // Producers woken by begin_close() leave promptly; wait until none is inside.
        // acquire: pairs with their release on leaving.
        while (slow_producers_.load(std::memory_order_acquire) != 0) {
            std::this_thread::yield();
        }
        return CloseResult{};
    }

    void begin_close() {
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            Lane& lane = lanes_[l];
            // seq_cst: competes with claims, seals and opens on the same word.
            std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
            while (!lane.head.compare_exchange_weak(
                head, (head & ~count_mask) | closed_bit | sealed_count, std::memory_order_seq_cst,
                std::memory_order_seq_cst)) {
            }
            const std::uint64_t count = head & count_mask;
            if (count == 0) {
                retire_unused(buffers_[buffer_of(head)]);  // the open batch was empty
            } else if (count < batch_size_) {
                seal_and_dispatch(buffer_of(head), static_cast<std::uint32_t>(count),
                                  DispatchReason::close);
            }  // else: a sealer owns that batch and dispatches it
        }
        if (timer_.joinable()) {
            {
                std::lock_guard<std::mutex> lock(timer_mutex_);
                timer_stop_ = true;
            }
            timer_condition_.notify_all();
            timer_.join();
        }
        { std::lock_guard<std::mutex> lock(space_mutex_); }
        space_condition_.notify_all();
    }

    std::int64_t to_nanoseconds(std::int64_t ticks) const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(typename Clock::duration(ticks))
            .count();
    }

    // ---- Members --------------------------------------------------------------------------
    Options options_;
    process_function process_;
    Clock clock_;
    std::uint32_t batch_size_ = 0;
    std::uint32_t lane_count_ = 1;
    std::uint32_t buffers_per_lane_ = 0;
    std::int64_t max_delay_ticks_ = -1;

    std::unique_ptr<T, ItemsDeleter> items_{nullptr, ItemsDeleter{0}};
    std::unique_ptr<detail::Completion<R>[]> completions_;
    std::unique_ptr<std::atomic<std::uint8_t>[]> slot_states_;
    std::unique_ptr<Buffer[]> buffers_;
    std::unique_ptr<Lane[]> lanes_;

    alignas(detail::cache_line_size) std::atomic<bool> timer_idle_{false};
    std::atomic<std::uint64_t> dispatched_batches_{0};
    std::atomic<std::uint64_t> in_flight_items_{0};
    std::atomic<std::uint32_t> slow_producers_{0};
    std::atomic<std::uint32_t> space_waiters_{0};

    std::mutex timer_mutex_;
    std::condition_variable timer_condition_;
    bool timer_stop_ = false;  // guarded by timer_mutex_
    std::optional<typename Clock::Sleeper> sleeper_;

    std::mutex space_mutex_;
    std::condition_variable space_condition_;

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
