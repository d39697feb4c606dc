#pragma once
/**
 * @file batcher_slots.hpp
 * @brief Batcher internals shared by every step of an item's path: slot states, the handle
 *        completion stored in a slot, producer numbers (lanes) and re-entrancy tracking.
 */

#include <atomic>
#include <cstdint>
#include <exception>
#include <utility>

#include "microbatch/detail/handle_state.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/outcome.hpp"

namespace microbatch {
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

}  // namespace microbatch
