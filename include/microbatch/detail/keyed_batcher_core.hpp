#pragma once
/**
 * @file detail/keyed_batcher_core.hpp
 * @brief `detail::KeyedBatcherCore`: the state and machinery behind `microbatch::KeyedBatcher`,
 *        which derives from it privately and adds the documented API.
 *
 * Everything here is an implementation detail. The member functions are defined in the files
 * included at the end: detail/keyed_admission.hpp (admitting an item), keyed_submit.hpp
 * (placing it in its key's batch, sealing, dispatch) and keyed_run.hpp (construction,
 * running batches, the timer, close).
 */

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/deadline.hpp"
#include "microbatch/detail/keyed_policy.hpp"
#include "microbatch/detail/keyed_process.hpp"
#include "microbatch/detail/keyed_state.hpp"
#include "microbatch/detail/unique_function.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/keyed_options.hpp"
#include "microbatch/keyed_stats.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/submit_result.hpp"
#include "microbatch/thread_pool.hpp"

namespace microbatch {
namespace detail {

/**
 * @brief The state and member functions of `KeyedBatcher` (see keyed_batcher.hpp for what they
 *        guarantee). KeyedBatcher inherits privately, so none of this is part of the API.
 *
 * Thread safety, blocking and exceptions: as documented at the KeyedBatcher member each
 * function implements.
 */
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
class KeyedBatcherCore {
protected:
    // ---- Types KeyedBatcher re-exports (documented there) ------------------------------------
    template <class F>
    static constexpr bool is_callback = std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>;
    using batch_result_type = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    using process_function = detail::UniqueFunction<batch_result_type(const Key&, Batch<T>&)>;
    using key_function = detail::UniqueFunction<Key(const T&)>;
    using cost_function = detail::UniqueFunction<std::size_t(const T&)>;

    // KeyedBatcher's constructors store the functions and call initialise() in their bodies.
    KeyedBatcherCore(KeyedOptions options, Clock clock)
        : options_(std::move(options)), clock_(std::move(clock)) {}
    KeyedBatcherCore(const KeyedBatcherCore&) = delete;
    KeyedBatcherCore& operator=(const KeyedBatcherCore&) = delete;
    ~KeyedBatcherCore() = default;  // KeyedBatcher's destructor calls destroy() first

    // ---- The bodies of KeyedBatcher's control calls: detail/keyed_run.hpp, keyed_submit.hpp --
    void destroy() noexcept;  // the destructor's work: close, join, release the keys
    void flush();
    void flush(const Key& key);
    void wait_idle();
    void close();
    bool is_closed() const;
    void set_key_limits(const Key& key, const KeyLimits& limits);
    void clear_key_limits(const Key& key);
    KeyedStats stats() const;
    std::optional<KeyStats> key_stats(const Key& key) const;
    std::size_t live_keys() const;
    std::size_t pending() const;
    std::size_t pending_cost() const;
    std::size_t in_flight() const;

    using State = detail::KeyState<Key, T, R>;
    using KeyBatch = detail::KeyedBatch<Key, T, R>;
    using TimerEntry = detail::KeyTimerEntry<Key, T, R>;
    using Lock = std::unique_lock<std::mutex>;
    using Deadline = std::chrono::steady_clock::time_point;
    using BatchList = std::vector<KeyBatch*>;
    enum WaitMode { wait_never, wait_forever, wait_until_deadline };
    static constexpr std::int64_t never = detail::KeyBatchCheck::never;
    /// Batches a worker runs in a row before handing the next one to the executor.
    static constexpr unsigned max_batches_per_task = 16;
    /// Finished batches kept for reuse (with their storage).
    static constexpr std::size_t max_free_batches = 256;

    static constexpr detail::NoCompletionStore<R> no_completion{};
    template <class F>
    static auto emplacer(std::remove_reference_t<F>& callback) {
        static_assert(is_callback<F>,
                      "microbatch::KeyedBatcher: the callback must be callable as "
                      "void(microbatch::Outcome<R>&&)");
        return [&callback](detail::Completion<R>& slot) {
            slot.emplace(std::forward<F>(callback));
            return true;
        };
    }
    template <class U>
    Key key_for(const U& item) const {
        if (!key_of_) {
            MICROBATCH_THROW(Error(
                "microbatch::KeyedBatcher: submit without a key needs a key function (pass one "
                "to the constructor, or use the overloads taking the key)"));
        }
        if constexpr (std::is_same_v<std::decay_t<U>, T>) {
            return key_of_(item);
        } else {
            return key_of_(T(item));
        }
    }
    static void throw_if_closed(SubmitStatus status) {
        if (status == SubmitStatus::closed) {
            MICROBATCH_THROW(ClosedError("microbatch::KeyedBatcher: submit on a closed batcher"));
        }
    }

    void initialise();  // detail/keyed_run.hpp
    template <class U>
    SubmitStatus with_handle(Key key, U&& item, WaitMode mode, Deadline deadline,
                             Handle<R>& out);  // detail/keyed_admission.hpp
    template <class U, class Store>
    SubmitStatus submit_core(Key key, U&& item, WaitMode mode, Deadline deadline, Store&& store);
    void check_cost(std::size_t cost) const;
    SubmitStatus wait_for_space(Lock& lock, WaitMode mode, Deadline deadline, std::size_t cost);
    bool has_room(std::size_t cost) const noexcept;
    void leave_cost_queue(std::uint64_t ticket) noexcept;
    template <class U, class Store>  // detail/keyed_submit.hpp
    SubmitStatus accept(Key key, U&& item, std::size_t cost, WaitMode mode, Deadline deadline,
                        Store&& store);
    State* find_or_create_key(const Key& key);
    void reclaim_expired(std::int64_t now);
    void reclaim(State* state);
    void release_entry(State* state) noexcept;
    KeyBatch* open_batch(State* state, std::int64_t now);
    KeyBatch* seal(State* state, DispatchReason reason);
    void queue_sealed(State* state, KeyBatch* batch);
    void mark_due(State* state);
    void schedule(std::int64_t at, State* state, std::uint64_t stamp, detail::KeyTimerKind kind);
    void dispatch_ready(detail::KeyedTrigger trigger, BatchList& out);
    void post_batches(BatchList& batches, std::size_t first) noexcept;
    void seal_all(DispatchReason reason, BatchList& out);
    void recycle(KeyBatch* batch) noexcept;
    void note_idle(State* state, std::int64_t now);
    std::size_t bound_for(const Key& key) const;
    std::int64_t delay_for(const Key& key) const;
    std::size_t cost_bound_for(const Key& key) const;
    std::int64_t now_ticks() const { return clock_.now().time_since_epoch().count(); }
    std::int64_t to_ticks(std::chrono::nanoseconds value) const noexcept;

    void run_batches(KeyBatch* batch) noexcept;  // detail/keyed_run.hpp
    void run_one(KeyBatch* batch) noexcept;
    KeyBatch* finish(KeyBatch* batch, bool take_next) noexcept;
    void complete(detail::Completion<R>& completion, std::exception_ptr error,
                  std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>& results,
                  std::size_t index) noexcept;
    void run_timer();
    void check_not_reentrant(const char* what) const;

    // ---- Members (everything below mutex_ is guarded by it unless stated) -------------------
    KeyedOptions options_;
    Clock clock_;
    process_function process_;
    key_function key_of_;
    cost_function cost_of_;               // empty: every item costs 0
    std::size_t capacity_ = 0;            // constant after construction
    std::size_t max_pending_cost_ = 0;    // constant; 0: none
    std::size_t default_batch_cost_ = 0;  // constant; 0: none
    std::size_t max_keys_ = 0;            // constant
    std::size_t max_in_flight_ = 1;       // constant
    std::size_t default_batch_size_ = 1;  // constant
    std::int64_t default_delay_ = -1;     // constant, ticks; < 0: none
    std::int64_t idle_timeout_ = 0;       // constant, ticks; < 0: never reclaim

    mutable std::mutex mutex_;
    std::unordered_map<Key, std::unique_ptr<State>, Hash, KeyEqual> keys_;
    std::unordered_map<Key, KeyLimits, Hash, KeyEqual> limits_;
    detail::RoundRobinRing<State*> ring_;
    std::priority_queue<TimerEntry> timer_heap_;
    std::vector<std::unique_ptr<KeyBatch>> free_batches_;
    std::set<std::uint64_t> unfinished_tickets_;  // first ticket of every unfinished batch
    std::uint64_t next_ticket_ = 0;
    std::uint64_t next_generation_ = 0;
    std::uint64_t next_sequence_ = 0;  // Batch::sequence of the next sealed batch
    std::size_t pending_items_ = 0;
    std::size_t pending_cost_ = 0;  // total cost of the pending items
    // Submits waiting for room while max_pending_cost is set, in arrival order: only the front
    // one may enter, so that a heavy item is not overtaken forever by lighter ones.
    std::deque<std::uint64_t> cost_queue_;
    std::uint64_t next_cost_ticket_ = 0;
    std::size_t in_flight_ = 0;
    std::size_t posters_ = 0;          // threads inside an executor call made for this batcher
    KeyedStats stats_;                 // the fields workers count live in counters_ instead
    detail::WorkerCounters counters_;  // atomic, not guarded
    bool closed_ = false;
    bool timer_stop_ = false;
    std::int64_t timer_wake_at_ = never;  // when the sleeping timer wakes; min() while awake
    std::size_t space_waiters_ = 0;
    std::size_t idle_waiters_ = 0;
    std::condition_variable space_condition_;
    std::condition_variable idle_condition_;
    std::condition_variable timer_condition_;
    std::optional<typename Clock::Sleeper> sleeper_;
    std::mutex join_mutex_;  // the first close() joins the timer

    std::unique_ptr<ThreadPool> pool_;
    Executor executor_;
    std::thread timer_;  // last: started after everything it uses is constructed
};

}  // namespace detail
}  // namespace microbatch

// The member functions (see each file's header comment).
#include "microbatch/detail/keyed_admission.hpp"
#include "microbatch/detail/keyed_run.hpp"
#include "microbatch/detail/keyed_submit.hpp"
