#pragma once
/**
 * @file detail/thread_pool_state.hpp
 * @brief ThreadPool internals: `microbatch::detail::ThreadPoolState` (the queue, its
 *        bookkeeping and the worker loop), the workers' `IdleSpinPolicy`, the thread-local
 *        `current_thread_pool_state`, and `PackagedCall`, the shared state of one
 *        `ThreadPool::submit()` call.
 */

#include <atomic>
#include <bitset>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/task_ring.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {
namespace detail {

/**
 * Runs `body()`; if it throws, runs `on_exception()` inside the handler, where
 * `std::current_exception()` is the thrown exception. Keeps try/catch in one place so the header
 * still compiles with `-fno-exceptions` (where nothing can throw and `body` just runs).
 */
template <class Body, class OnException>
void invoke_catching(Body&& body, OnException&& on_exception) {
#if MICROBATCH_HAS_EXCEPTIONS
    try {
        body();
    } catch (...) {
        on_exception();
    }
#else
    static_cast<void>(on_exception);
    body();
#endif
}

/**
 * Decides, for one worker, whether to spin before it sleeps when it finds the queue empty.
 *
 * Spinning (yielding the core) pays while tasks stream in: the next task then finds the worker
 * awake and its submitter skips the futex wake-up. It costs when the wait is long: on Linux
 * (EEVDF) every `sched_yield` pushes the worker's virtual deadline out, so when the task that
 * finally comes wakes the worker, the worker may not preempt a busy submitter on its CPU and
 * waits out the submitter's time slice (up to milliseconds). So a worker spins only while
 * nearly all its recent waits were short, that is a task came within `spin_window` of the worker
 * running out of work (a spin would have caught it, or did). Otherwise it sleeps at once,
 * without yielding, and keeps its scheduler credit for the wake-up.
 *
 * Guarantees: `should_spin()` is true only if at least `min_short_waits` of the last
 * `history_length` waits were short, counting a fresh policy's history as all short; so after
 * `history_length - min_short_waits + 1` long waits in a row it stops spinning until short waits
 * dominate again. No clock reads, no shared state: one instance per worker (not thread-safe).
 */
class IdleSpinPolicy {
public:
    /// How long a spin lasts (give or take a few yields); also the longest wait that counts as
    /// short.
    static constexpr std::chrono::microseconds spin_window{50};
    /// How many of the most recent waits are remembered.
    static constexpr std::size_t history_length = 8;
    /// How many of those must have been short for the next wait to spin. A spin that finds
    /// nothing costs far more (a delayed wake-up) than a rewarded one saves (one futex
    /// wake-up), hence a clear majority; a stream's waits are nearly all short.
    static constexpr std::size_t min_short_waits = 6;

    /// True when the next wait should start with a spin.
    bool should_spin() const noexcept { return history_.count() >= min_short_waits; }

    /// Records how the last wait ended: @p short_wait if a task came within `spin_window`.
    void record_wait(bool short_wait) noexcept {
        history_ <<= 1;
        history_.set(0, short_wait);
    }

private:
    // Bit i: the i-th most recent wait was short. Starts as if tasks were streaming: a new pool
    // then picks up its first stream without a futex wake-up per task while it learns, and an
    // idle one stops spinning after a few waits.
    std::bitset<history_length> history_{(1ULL << history_length) - 1};
};

class ThreadPoolState;

/// The pool state the calling thread is a worker of; null on threads that belong to no pool.
/// Lets a pool recognise calls made from its own tasks (which must not join or wait for
/// themselves).
inline thread_local const ThreadPoolState* current_thread_pool_state = nullptr;

/**
 * The part of a ThreadPool its workers use: the queue and its bookkeeping.
 *
 * Held through a shared_ptr by the pool, by every worker thread and by every executor() copy, so
 * it outlives the ThreadPool object when the pool is destroyed from one of its own tasks (that
 * worker cannot be joined and keeps draining after the destructor returns) and an executor used
 * after the pool is gone reports ClosedError instead of touching freed memory.
 *
 * The queue: tasks go into a lock-free TaskRing while it has room and nothing waits in the
 * mutex-protected overflow deque, else into that deque. Workers take from the ring first and
 * from the deque only when the ring is empty (checked again under the mutex), so a task queued
 * after another one finished queuing never starts first: a push that finds the deque empty
 * comes after everything that was in it, and a pop takes from the deque only when every task
 * pushed to the ring before it (ring pushes claimed before the deque push) has been taken. Such
 * a pop also moves the deque's oldest tasks into the empty ring, in order: only pushes that
 * began before the deque filled (and so overlap every task in it) can land among them.
 *
 * Sleeping: a worker goes to sleep only under the mutex, after a seq_cst increment of
 * `sleepers_` followed by a check that the queue is empty. A ring push is a seq_cst
 * compare-and-swap followed by a seq_cst load of `sleepers_`: in the single order of seq_cst
 * operations one of the two comes first, so either the worker sees the task or the pusher sees
 * the sleeper and (under the mutex) hands it a wake token. The wake-up (mutex, futex) is thus
 * paid only when a worker actually sleeps; a streaming pool's workers spin instead.
 *
 * Idleness: `finished_` counts tasks run (their captures destroyed); the pool is idle when it
 * equals the tasks accepted: the ring's claimed positions plus the deque's pushes (less the
 * tasks moved from the deque into the ring, which the ring counts again).
 */
class ThreadPoolState {
public:
    /// Ring slots: 1,024 tasks (about 40 KB) cover the batches a Batcher keeps in flight with
    /// its default capacity at B = 1; beyond that tasks queue in the overflow deque.
    static constexpr std::size_t ring_capacity = 1024;

    ThreadPoolState() : ring_(ring_capacity) {}

    /// Queues @p task and returns true, or returns false (and leaves @p task as it was) when the
    /// pool no longer accepts work.
    bool push(Task& task) {
        // relaxed: a stale non-zero only sends this task to the deque (still FIFO); a stale zero
        // cannot hide a deque push that finished before this call began (coherence), and tasks
        // pushed concurrently have no order to keep.
        if (overflowed_.load(std::memory_order_relaxed) == 0) {
            switch (ring_.try_push(task)) {
                case TaskRing::PushResult::pushed:
                    // seq_cst: after the ring's seq_cst claim, see the class comment (Sleeping).
                    if (sleepers_.load() != 0) {
                        wake_one_if_needed();
                    }
                    return true;
                case TaskRing::PushResult::closed:
                    return false;
                case TaskRing::PushResult::full:
                    break;
            }
        }
        bool wake_worker = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (stopping_) {
                return false;
            }
            overflow_.push_back(std::move(task));
            // relaxed: written only under the mutex; lock-free readers treat it as a hint.
            overflowed_.store(overflow_.size(), std::memory_order_relaxed);
            overflow_pushes_ += 1;
            wake_worker = grant_wake_locked();
        }
        if (wake_worker) {
            work_available_.notify_one();
        }
        return true;
    }

    /// Stops accepting tasks and wakes every worker; workers drain the queue, then exit.
    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (stopping_) {
                return;
            }
            stopping_ = true;
            ring_.close();
            stopping_hint_.store(true, std::memory_order_relaxed);  // hint for spinning workers
        }
        work_available_.notify_all();
    }

    /// Body of every worker thread: runs queued tasks until the pool stops and the queue is empty.
    void run_worker() {
        current_thread_pool_state = this;
        IdleSpinPolicy idle_spin;
        Task task;
        for (;;) {
            const TaskRing::PopResult popped = pop(task);
            if (popped == TaskRing::PopResult::busy) {
                std::this_thread::yield();  // a pusher is mid-move into the oldest slot
                continue;
            }
            if (popped == TaskRing::PopResult::empty) {
                if (!wait_for_work(idle_spin)) {
                    break;  // stopping and drained: no task can arrive any more
                }
                continue;
            }
            bool threw = false;
            invoke_catching([&task] { task(); }, [&threw] { threw = true; });
            // Destroy the captures before counting the task finished: their destructors may
            // post to this pool, and wait_idle() returning should mean the tasks' state is gone.
            task = nullptr;
            if (threw) {
                // relaxed: a statistic; readers want a count, not an ordering.
                task_exceptions_.fetch_add(1, std::memory_order_relaxed);
            }
            // seq_cst: then the idle_waiters_ load below; pairs with wait_idle() (Dekker).
            finished_.fetch_add(1);
            if (idle_waiters_.load() != 0) {
                notify_if_idle();
            }
        }
        current_thread_pool_state = nullptr;
    }

    /// Blocks until the queue is empty and no task is running.
    void wait_idle() {
        std::unique_lock<std::mutex> lock(mutex_);
        idle_waiters_.fetch_add(1);  // seq_cst: before reading finished_, see run_worker()
        became_idle_.wait(lock, [this] { return idle_locked(); });
        idle_waiters_.fetch_sub(1);
    }

    std::size_t pending() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<std::size_t>(ring_.claimed() - ring_.taken()) + overflow_.size();
    }

    std::size_t task_exceptions() const {
        // relaxed: a statistic (the tests read it after wait_idle(), which synchronises).
        return task_exceptions_.load(std::memory_order_relaxed);
    }

private:
    /// Takes the oldest task into @p task: from the ring, else from the deque, and only when
    /// the ring is empty under the mutex (see the class comment for why that keeps FIFO).
    TaskRing::PopResult pop(Task& task) {
        const TaskRing::PopResult popped = ring_.try_pop(task);
        // relaxed: a stale zero only delays us to wait_for_work(), which checks under the mutex.
        if (popped != TaskRing::PopResult::empty ||
            overflowed_.load(std::memory_order_relaxed) == 0) {
            return popped;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        return pop_locked(task);
    }

    TaskRing::PopResult pop_locked(Task& task) {
        const TaskRing::PopResult popped = ring_.try_pop(task);
        if (popped != TaskRing::PopResult::empty || overflow_.empty()) {
            return popped;
        }
        task = std::move(overflow_.front());
        overflow_.pop_front();
        // The ring is empty: move the deque's oldest tasks into it (they stay in order, ahead of
        // any later push), so the workers take them without the mutex and, once the deque is
        // empty, pushers return to the ring. Otherwise a pool that overflowed once would stay
        // on the deque for as long as its producers keep up.
        while (!overflow_.empty() &&
               ring_.try_push(overflow_.front()) == TaskRing::PushResult::pushed) {
            overflow_.pop_front();
            overflow_pushes_ -= 1;  // now counted by the ring's claims, see idle_locked()
        }
        // relaxed: written only under the mutex, see push().
        overflowed_.store(overflow_.size(), std::memory_order_relaxed);
        return TaskRing::PopResult::popped;
    }

    /// True when nothing is queued (the ring's claimed positions include pushes still moving
    /// their task in). Mutex held; seq_cst loads, see the class comment (Sleeping).
    bool queue_empty_locked() const {
        return ring_.claimed() == ring_.taken() && overflow_.empty();
    }

    /// True when every accepted task has finished. Mutex held. Reads finished_ first: it and the
    /// accepted count only grow and finished_ <= accepted, so equality means idle at that read.
    bool idle_locked() const {
        const std::uint64_t finished = finished_.load();
        return finished == ring_.claimed() + overflow_pushes_;
    }

    /// Wakes wait_idle() callers if the pool is idle now. Called after a task finished while a
    /// waiter was registered; the check under the mutex cannot miss the waiter's own check.
    void notify_if_idle() {
        bool idle = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            idle = idle_locked();
        }
        if (idle) {
            became_idle_.notify_all();
        }
    }

    /// Called after a ring push saw a sleeper: hands a sleeping worker a wake token if the
    /// queued tasks outnumber the workers that will look at the queue anyway.
    void wake_one_if_needed() {
        bool wake_worker = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            wake_worker = grant_wake_locked();
        }
        if (wake_worker) {
            work_available_.notify_one();
        }
    }

    /// Mutex held. Busy and spinning workers look at the queue again before they sleep, and so
    /// does a worker holding a wake token, so a sleeper is woken only for tasks that none of
    /// those will take (each takes one, then comes back for more). True if a token was granted
    /// (the caller then notifies, after unlocking so the woken worker does not block on us).
    bool grant_wake_locked() {
        // relaxed: spinning_workers_ is a hint. A spinner counted here goes through the mutex
        // and sees the queue before it can sleep, so counting it never strands a task.
        const std::size_t lookers =
            spinning_workers_.load(std::memory_order_relaxed) + wake_tokens_;
        const std::uint64_t queued = ring_.claimed() - ring_.taken() + overflow_.size();
        if (sleepers_.load() == 0 || queued <= lookers) {
            return false;
        }
        sleepers_.fetch_sub(1);  // the token's receiver leaves the sleepers, see wait_for_work()
        ++wake_tokens_;
        // For the woken worker's IdleSpinPolicy: when the task came, not when the worker got a
        // core. Read only here, where a futex wake-up costs far more.
        last_wake_at_ = std::chrono::steady_clock::now();
        return true;
    }

    /**
     * Called when the queue looked empty. Returns false when the pool is stopping and the queue
     * is drained (the worker exits), true when the worker should look at the queue again.
     *
     * Spins first if @p idle_spin says recent waits were short: a steady stream of tasks (a
     * batcher dispatching a batch every few microseconds) then finds this worker awake and the
     * submitter skips the futex wake-up that would otherwise dominate the cost of a small task.
     * Records in @p idle_spin whether a task came within its spin window.
     */
    bool wait_for_work(IdleSpinPolicy& idle_spin) {
        using Clock = std::chrono::steady_clock;
        const Clock::time_point idle_since = Clock::now();
        const Clock::time_point spin_until = idle_since + IdleSpinPolicy::spin_window;
        // A spin that saw a task come in time is a short wait even if another worker took the
        // task (this one then sleeps, as the other will be back for the next task): tasks are
        // streaming in.
        bool short_wait = false;
        if (idle_spin.should_spin()) {
            // relaxed: a hint for grant_wake_locked(), see there.
            spinning_workers_.fetch_add(1, std::memory_order_relaxed);
            const std::uint64_t pushes_before = ring_.claimed();
            const bool found = spin_for_work(spin_until, pushes_before, short_wait);
            spinning_workers_.fetch_sub(1, std::memory_order_relaxed);
            if (found) {
                idle_spin.record_wait(short_wait);
                return true;
            }
        }
        std::unique_lock<std::mutex> lock(mutex_);
        bool slept = false;
        for (;;) {
            if (stopping_ && queue_empty_locked()) {
                return false;
            }
            sleepers_.fetch_add(1);  // seq_cst: before the queue check, see the class comment
            if (!queue_empty_locked() || stopping_) {
                sleepers_.fetch_sub(1);  // no token can be ours: tokens are granted under mutex_
                break;
            }
            work_available_.wait(lock, [this] { return wake_tokens_ > 0 || stopping_; });
            slept = true;
            if (wake_tokens_ > 0) {
                --wake_tokens_;  // the granter already took one off sleepers_ for us
                break;
            }
            sleepers_.fetch_sub(1);  // woken by stop(): loop to drain or exit
        }
        if (!short_wait) {
            // The task's arrival: stamped by the push that woke us, else seen just now.
            const Clock::time_point arrived =
                slept && last_wake_at_ >= idle_since ? last_wake_at_ : Clock::now();
            short_wait = arrived <= spin_until;
        }
        idle_spin.record_wait(short_wait);
        return true;
    }

    /**
     * Spins (yielding the core) until a task is hinted (returns true), or until stop is hinted
     * or @p give_up passes (returns false). Sets @p saw_push if a task was pushed (the ring's claim
     * count moved on from @p pushes_before, or the deque filled) before @p give_up, even if another
     * worker took it. Called without the mutex.
     */
    bool spin_for_work(std::chrono::steady_clock::time_point give_up, std::uint64_t pushes_before,
                       bool& saw_push) const noexcept {
        using Clock = std::chrono::steady_clock;
        for (unsigned spin = 1;; ++spin) {
            // relaxed: hints only; the caller pops or re-checks under the mutex before acting.
            if (ring_.claimed() != ring_.taken() ||
                overflowed_.load(std::memory_order_relaxed) != 0) {
                // Not in time if found after give_up: one yield can hand the core to another
                // thread for a whole time slice, and then spinning did not pay.
                saw_push = saw_push || Clock::now() < give_up;
                return true;
            }
            // relaxed: a hint; false sends the caller to the mutex, where stopping_ is exact
            // (returning true would loop it back here forever once the queue has drained).
            if (stopping_hint_.load(std::memory_order_relaxed)) {
                return false;
            }
            std::this_thread::yield();  // lets a submitter on the same core make progress
            // The clock only every 16 yields (read after each one, it measurably slowed
            // streaming at B = 16): a spin may overrun give_up by a few yields.
            if (spin % 16 == 0) {
                if (Clock::now() >= give_up) {
                    return false;
                }
                if (ring_.claimed() != pushes_before) {
                    saw_push = true;
                }
            }
        }
    }

    TaskRing ring_;
    mutable std::mutex mutex_;
    std::condition_variable work_available_;  // workers wait here for tokens or stopping_
    std::condition_variable became_idle_;     // wait_idle() callers wait here
    std::deque<Task> overflow_;               // tasks that found the ring full (or in use)
    std::atomic<std::size_t> overflowed_{0};  // overflow_.size(), readable without the mutex
    std::uint64_t overflow_pushes_ = 0;       // tasks pushed to overflow_, less those moved on
    std::atomic<std::uint64_t> finished_{0};  // tasks run and destroyed, see run_worker()
    std::atomic<bool> stopping_hint_{false};  // stopping_, readable without the mutex
    std::atomic<std::size_t> sleepers_{0};    // workers asleep (or about to) without a token
    std::atomic<std::size_t> spinning_workers_{0};  // workers in spin_for_work()
    std::size_t wake_tokens_ = 0;  // wake-ups granted and not yet taken by a sleeper
    std::chrono::steady_clock::time_point last_wake_at_;  // when a push last granted a token
    std::atomic<std::size_t> idle_waiters_{0};            // threads blocked in wait_idle()
    std::atomic<std::size_t> task_exceptions_{0};
    bool stopping_ = false;
};

/// The shared state of one submit() call: the callable, its arguments and the promise that
/// carries the outcome to the caller's future.
template <class Result, class Function, class... Args>
class PackagedCall {
public:
    template <class F, class... A>
    explicit PackagedCall(F&& function, A&&... arguments)
        : function_(std::forward<F>(function)), arguments_(std::forward<A>(arguments)...) {}

    std::future<Result> get_future() { return promise_.get_future(); }

    /// Invokes the callable once, as std::thread would (on rvalues of the decayed copies).
    void run() {
        invoke_catching(
            [this] {
                if constexpr (std::is_void_v<Result>) {
                    std::apply(std::move(function_), std::move(arguments_));
                    promise_.set_value();
                } else {
                    promise_.set_value(std::apply(std::move(function_), std::move(arguments_)));
                }
            },
            [this] { promise_.set_exception(std::current_exception()); });
    }

private:
    Function function_;
    std::tuple<Args...> arguments_;
    std::promise<Result> promise_;
};

}  // namespace detail
}  // namespace microbatch
