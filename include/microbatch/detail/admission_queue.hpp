#pragma once
/**
 * @file admission_queue.hpp
 * @brief Fair admission (issue 11): producers blocked on a full batcher lane wait in a FIFO queue
 *        and are let in one at a time, in arrival order.
 *
 * Each blocked producer queues a waiter node on its own stack. They all sleep on the batcher's
 * condition variable (inside the batcher object, where tools and tests expect blocked producers
 * to wait), and a wake-up lets only the producer whose turn it is in; the others look and sleep
 * again. The front waiter is admitted when its lane has room and no earlier producer
 * still holds the turn; it holds the turn (AdmissionTurn) until it has claimed its slot, then
 * passes it on by waking the next waiter. A producer whose claim lost a race keeps its place at
 * the front. Everything here is guarded by the batcher's space mutex.
 */

#include <condition_variable>
#include <cstddef>
#include <mutex>

#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

/// One blocked producer; lives on its stack while it waits.
struct AdmissionWaiter {
    AdmissionWaiter* previous = nullptr;
    AdmissionWaiter* next = nullptr;
};

/// The FIFO of one lane's blocked producers. Not thread-safe: guarded by the batcher's mutex.
class AdmissionQueue {
public:
    /// Queues @p waiter last (or first: a producer that held the turn keeps its place).
    void push(AdmissionWaiter& waiter, bool first) noexcept {
        if (first) {
            waiter.next = head_;
            waiter.previous = nullptr;
            (head_ != nullptr ? head_->previous : tail_) = &waiter;
            head_ = &waiter;
        } else {
            waiter.previous = tail_;
            waiter.next = nullptr;
            (tail_ != nullptr ? tail_->next : head_) = &waiter;
            tail_ = &waiter;
        }
        ++size_;
    }

    /// Takes @p waiter (queued) out of the queue.
    void remove(AdmissionWaiter& waiter) noexcept {
        (waiter.previous != nullptr ? waiter.previous->next : head_) = waiter.next;
        (waiter.next != nullptr ? waiter.next->previous : tail_) = waiter.previous;
        waiter.previous = waiter.next = nullptr;
        --size_;
    }

    /// The waiter whose turn comes next, or nullptr.
    AdmissionWaiter* front() const noexcept { return head_; }
    /// Waiters queued.
    std::size_t size() const noexcept { return size_; }

    /// Wakes the front waiter, unless a producer still holds the turn (it wakes it on release).
    void wake_front() noexcept {
        if (head_ != nullptr && !turn_held) {
            condition->notify_all();  // shared by every waiter: the others sleep again
        }
    }
    /// Wakes every waiter (the batcher is closing).
    void wake_all() noexcept {
        if (head_ != nullptr) {
            condition->notify_all();
        }
    }

    /// The condition variable the waiters sleep on (the batcher's), set once at construction.
    std::condition_variable* condition = nullptr;

    /// An admitted producer has not claimed its slot yet: nobody else is admitted meanwhile.
    bool turn_held = false;

private:
    AdmissionWaiter* head_ = nullptr;
    AdmissionWaiter* tail_ = nullptr;
    std::size_t size_ = 0;
};

/// Held by an admitted producer from leaving the queue until it claimed its slot (or gave up):
/// release() passes the turn to the next waiter. Empty (no queue) on the fast path. A producer
/// that gives up releases it while still registered as a slow producer (the batcher may be
/// destroyed as soon as it has left), so the destructor only ever finds it empty.
class AdmissionTurn {
public:
    AdmissionTurn() noexcept = default;
    AdmissionTurn(const AdmissionTurn&) = delete;
    AdmissionTurn& operator=(const AdmissionTurn&) = delete;
    ~AdmissionTurn() { release(); }

    /// True while this producer holds its lane's turn.
    bool held() const noexcept { return queue_ != nullptr; }

    /// Takes the turn of @p queue (called under @p mutex).
    void take(AdmissionQueue& queue, std::mutex& mutex) noexcept {
        queue.turn_held = true;
        queue_ = &queue;
        mutex_ = &mutex;
    }

    /// Gives the turn back without waking anyone (called under the mutex, by a producer that
    /// queues again at the front).
    void give_back() noexcept {
        queue_->turn_held = false;
        queue_ = nullptr;
    }

    /// Passes the turn to the next waiter, if held. Takes the mutex.
    void release() noexcept {
        if (queue_ != nullptr) {
            std::lock_guard<std::mutex> lock(*mutex_);
            queue_->turn_held = false;
            queue_->wake_front();
            queue_ = nullptr;
        }
    }

private:
    AdmissionQueue* queue_ = nullptr;
    std::mutex* mutex_ = nullptr;
};

}  // namespace microbatch::detail
