#pragma once
/**
 * @file batcher_slots.hpp
 * @brief Batcher internals shared by every step of an item's path: slot states, the handle
 *        completion stored in a slot, producer numbers (lanes) and re-entrancy tracking.
 */

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/handle_state.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/outcome.hpp"

namespace microbatch {
namespace detail {

/// One batch running on this thread, linked to the batch it runs inside of (if any): a batch
/// of batcher A may run a batch of batcher B on the same thread (B's executor runs tasks inline
/// or refused B's batch, or B's own calls run it), and B's batch may call back into A. Every
/// batcher on the chain is "running" for re-entrancy detection, not only the innermost.
struct RunningBatch {
    const void* batcher;
    const RunningBatch* outer;
};

/// The innermost batch running on this thread (nullptr if none); an entry lives on run_batch's
/// stack frame.
inline thread_local const RunningBatch* running_batches = nullptr;

/// True if a batch of @p batcher is running on this thread, at any depth of nesting.
inline bool is_running_on_this_thread(const void* batcher) noexcept {
    for (const RunningBatch* running = running_batches; running != nullptr;
         running = running->outer) {
        if (running->batcher == batcher) {
            return true;
        }
    }
    return false;
}

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

/// Slot states, written by the producer that filled the slot, read by the worker. One bit
/// each, so that the worker learns which kinds a batch holds by or-ing them (run_batch).
enum SlotState : std::uint8_t {
    slot_empty = 0,            ///< Not written yet (the producer is still constructing it).
    slot_item = 1,             ///< Holds an item, no per-item completion.
    slot_item_completion = 2,  ///< Holds an item and a completion (callback or handle).
    slot_hole = 4,             ///< Constructing the item threw: the slot holds nothing.
};

/// Stores @p state into @p count slot states with memory order @p Order: relaxed to reset a
/// finished batch's slots (the caller publishes them), release to publish slots whose items
/// the caller wrote before (each store publishes everything written before it). Unrolled by
/// hand: the compiler neither merges nor unrolls atomic stores, and a one-store loop is four
/// instructions per slot where this is under two.
template <std::memory_order Order>
inline void store_slot_states(std::atomic<std::uint8_t>* states, std::size_t count,
                              std::uint8_t state) noexcept {
    std::size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        states[i].store(state, Order);
        states[i + 1].store(state, Order);
        states[i + 2].store(state, Order);
        states[i + 3].store(state, Order);
    }
    for (; i < count; ++i) {
        states[i].store(state, Order);
    }
}

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
        if (state_ != nullptr) {
            drop(state_);
        }
    }
    /// Claims the item for processing (see HandleState::try_claim); when the handle cancelled
    /// it first, lets go of the state, which the cancel already completed.
    bool try_claim() noexcept {
        if (state_->try_claim()) {
            return true;
        }
        std::exchange(state_, nullptr)->release();
        return false;
    }
    void operator()(Outcome<R>&& outcome) noexcept {
        std::exchange(state_, nullptr)->set_and_release(std::move(outcome));
    }

private:
    // Out of line: every completed item runs this destructor with state_ null, and the inlined
    // error path made it a full call frame (18 instructions per item, callgrind).
    MICROBATCH_NOINLINE static void drop(HandleState<R>* state) noexcept {
        // Dropped without running: never leave a waiter hanging.
        state->set(Outcome<R>(
            detail::make_error_ptr(Error("microbatch: item dropped before completion"))));
        state->release();
    }

    HandleState<R>* state_;
};

/// True for completion stores that already record an item deadline (Batcher::DeadlineStore).
template <class Store, class = void>
struct carries_deadline : std::false_type {};
template <class Store>
struct carries_deadline<Store, std::void_t<decltype(Store::carries_deadline)>> : std::true_type {};

/// The completion of a fire-and-forget item with a deadline: carries the deadline, does nothing.
template <class R>
struct NoCompletion {
    void operator()(Outcome<R>&&) noexcept {}
};

}  // namespace detail

}  // namespace microbatch
