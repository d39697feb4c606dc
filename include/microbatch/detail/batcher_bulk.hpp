#pragma once
/**
 * @file batcher_bulk.hpp
 * @brief Batcher internals, step 1 for a run of items: claiming a batch's slots for several
 *        items with one fetch_add (post_n, submit_n and their try/timed forms).
 *
 * submit_bulk() loops: claim min(left, free slots seen, max_bulk_claim) slots with one
 * fetch_add on the lane's head word, fill_run() constructs the items in place and publishes
 * each slot, after_fill() seals as a single claim's fill_slot() would; when no batch is open,
 * wait_for_space() blocks exactly as for single submissions (detail/batcher_submit.hpp).
 */

#include <algorithm>
#include <iterator>
#include <memory>
#include <string>

#include "microbatch/detail/batcher_core.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch {

// ---- What a bulk submission stores in each slot ------------------------------------------------
// A store offers store(completion, index) (may throw; returns whether it stored a
// completion), accept(index) once the item is constructed, and release() for the caller.

// Fire-and-forget: nothing per item.
template <class T, class R, class Clock>
struct detail::BatcherCore<T, R, Clock>::BulkPostStore {
    static bool store(detail::Completion<R>&, std::size_t) noexcept { return false; }
    static void accept(std::size_t) noexcept {}
};

// One copy of the user's callback per item, invoked with the item's index in the range.
template <class T, class R, class Clock>
template <class F>
class detail::BatcherCore<T, R, Clock>::BulkCallbackStore {
public:
    explicit BulkCallbackStore(F& callback) noexcept : callback_(callback) {}
    bool store(detail::Completion<R>& slot, std::size_t index) {
        slot.emplace(Indexed{callback_, index});  // copies the callback: may throw
        return true;
    }
    static void accept(std::size_t) noexcept {}
    F release() { return callback_; }

private:
    struct Indexed {
        F callback;
        std::size_t index;
        void operator()(Outcome<R>&& outcome) { callback(index, std::move(outcome)); }
    };
    F& callback_;
};

// One pooled handle state per item; the handle goes to the output iterator once the item is
// accepted (never for an item that was not).
template <class T, class R, class Clock>
template <class OutputIt>
class detail::BatcherCore<T, R, Clock>::BulkHandleStore {
public:
    explicit BulkHandleStore(OutputIt out) : out_(std::move(out)) {}
    bool store(detail::Completion<R>& slot, std::size_t) {
        // create() hands out two references: one for the slot's completion, one for the
        // handle; pending_ keeps the handle's until accept() (or drops it, if the item fails).
        detail::HandleState<R>* const state = detail::HandleState<R>::create();
        pending_ = detail::HandleAccess::make(state);
        slot.emplace(detail::HandleCompletion<R>(state));
        return true;
    }
    void accept(std::size_t) {
        *out_ = std::move(pending_);
        ++out_;
    }
    OutputIt release() { return std::move(out_); }

private:
    OutputIt out_;
    Handle<R> pending_;
};

// Options::default_timeout applies to bulk items as to single ones: the wrapped store also
// records the deadline in each item's slot (as DeadlineStore, detail/batcher_deadlines.hpp).
template <class T, class R, class Clock>
template <class Inner>
struct detail::BatcherCore<T, R, Clock>::BulkDeadlineStore {
    BatcherCore* owner;
    Inner* inner;
    std::int64_t deadline;  // clock ticks

    bool store(detail::Completion<R>& slot, std::size_t index) noexcept(
        noexcept(std::declval<Inner&>().store(std::declval<detail::Completion<R>&>(), 0))) {
        owner->keep_deadline(slot, inner->store(slot, index), deadline);
        return true;
    }
    void accept(std::size_t index) noexcept(noexcept(std::declval<Inner&>().accept(0))) {
        inner->accept(index);
    }
};

template <class T, class R, class Clock>
template <class Sink>
auto detail::BatcherCore<T, R, Clock>::bulk_store(Sink& sink) {
    if constexpr (std::is_invocable_v<Sink&, std::size_t, Outcome<R>&&>) {
        static_assert(
            std::is_copy_constructible_v<Sink> && std::is_nothrow_move_constructible_v<Sink>,
            "microbatch::Batcher::submit_n: the callback is copied into each item's "
            "slot: it must be copy constructible and nothrow move constructible");
        return BulkCallbackStore<Sink>(sink);
    } else {
        static_assert(std::is_assignable_v<decltype(*std::declval<Sink&>()), Handle<R>&&>,
                      "microbatch::Batcher::submit_n: the sink must be callable as "
                      "void(std::size_t index, microbatch::Outcome<R>&&) or be an output "
                      "iterator of microbatch::Handle<R>");
        return BulkHandleStore<Sink>(sink);
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::throw_if_bulk_rejected(const BulkResult& result,
                                                              std::size_t n) const {
    if (result.status == SubmitStatus::closed) {
        MICROBATCH_THROW(BulkClosedError("microbatch::Batcher: bulk submit on a closed batcher (" +
                                             std::to_string(result.accepted) + " of " +
                                             std::to_string(n) + " items were accepted)",
                                         result.accepted));
    }
    if (result.status == SubmitStatus::infeasible) {  // admission control (deadlines)
        MICROBATCH_THROW(DeadlineInfeasible(
            "microbatch::Batcher: the run's items cannot finish by their deadline (admission "
            "control; none of the " +
            std::to_string(n) + " items was accepted)"));
    }
}

template <class T, class R, class Clock>
template <class InputIt, class Store>
BulkResult detail::BatcherCore<T, R, Clock>::submit_bulk(InputIt& first, std::size_t n,
                                                         WaitMode mode, Deadline deadline,
                                                         Store&& store) {
    if (has_default_timeout_) {  // Options::default_timeout, as for single submissions
        return submit_bulk_due(default_deadline_, first, n, mode, deadline, store);
    }
    return claim_bulk(first, n, mode, deadline, store);
}

// A run whose items all carry @p due: one clock reading for the whole run; with admission
// control the run is judged for its last item and admitted or refused as a whole.
template <class T, class R, class Clock>
template <class InputIt, class Store>
BulkResult detail::BatcherCore<T, R, Clock>::submit_bulk_due(const deadline_type& due,
                                                             InputIt& first, std::size_t n,
                                                             WaitMode mode, Deadline wait,
                                                             Store&& store) {
    if (n == 0) {
        return BulkResult{SubmitStatus::accepted, 0};
    }
    std::int64_t deadline = 0;
    if (!resolve_and_admit(due, n, deadline)) {
        return BulkResult{SubmitStatus::infeasible, 0};  // the items are left untouched
    }
    BulkDeadlineStore<std::remove_reference_t<Store>> wrapped{this, &store, deadline};
    return claim_bulk(first, n, mode, wait, wrapped);
}

template <class T, class R, class Clock>
template <class InputIt, class Store>
BulkResult detail::BatcherCore<T, R, Clock>::claim_bulk(InputIt& first, std::size_t n,
                                                        WaitMode mode, Deadline deadline,
                                                        Store& store) {
    if (cost_function_) {  // weighed items, one claim each: detail/batcher_cost.hpp
        return submit_bulk_weighed(first, n, mode, deadline, store);
    }
    Lane& lane = lane_for_this_thread();
    detail::AdmissionTurn turn;  // held while admitted from the queue of blocked producers
    std::size_t done = 0;
    while (done < n) {
        // Test before claiming, as try_claim_slot does: a claim on a sealed or closed head is a
        // stray increment. relaxed: only a filter; the fetch_add below decides.
        const std::uint64_t seen = lane.head.load(std::memory_order_relaxed);
        const std::uint64_t seen_count = seen & count_mask;
        if (seen_count < batch_size_ && (seen & closed_bit) == 0) {
            // Claim no more than the slots seen free: a claim that lands on a fuller (or newly
            // opened) batch keeps what fits and leaves the rest as stray increments, at most
            // max_bulk_claim per producer per seal, far below the head word's headroom
            // (sealed_count leaves 2^23).
            const std::uint64_t want = std::min<std::uint64_t>(
                {static_cast<std::uint64_t>(n - done), batch_size_ - seen_count,
                 static_cast<std::uint64_t>(max_bulk_claim)});
            // seq_cst: as try_claim_slot's claim (orders it before note_batch_opened's handshake).
            const std::uint64_t head = lane.head.fetch_add(want, std::memory_order_seq_cst);
            const std::uint64_t index = head & count_mask;
            if (index < batch_size_) {
                turn.release();  // claimed: the next blocked producer may go (fair admission)
                const auto count =
                    static_cast<std::uint32_t>(std::min<std::uint64_t>(want, batch_size_ - index));
                done += fill_run(lane, head, static_cast<std::uint32_t>(index), count, first, done,
                                 store);
                continue;
            }
        }
        const SubmitStatus status = wait_for_space(lane, mode, deadline, turn, n - done);
        if (status != SubmitStatus::accepted) {
            return BulkResult{status, done};  // the n - done rejected items are counted there
        }
    }
    return BulkResult{SubmitStatus::accepted, done};
}

// Fills the claimed slots [index, index + count) of the batch @p head describes with the next
// @p count items. Returns the number accepted (count, unless constructing one throws: then the
// slots from it on are published as holes and the exception propagates after the seal logic).
template <class T, class R, class Clock>
template <class InputIt, class Store>
std::uint32_t detail::BatcherCore<T, R, Clock>::fill_run(Lane& lane, std::uint64_t head,
                                                         std::uint32_t index, std::uint32_t count,
                                                         InputIt& first, std::size_t done,
                                                         Store& store, std::uint64_t cost) {
    const std::uint32_t buffer = buffer_of(head);
    const std::size_t base = static_cast<std::size_t>(buffer) * batch_size_;
    const std::uint32_t end = index + count;
    // relaxed: written before the head CAS our claim synchronised with (see Buffer::start).
    const std::uint32_t start = buffers_[buffer].start.load(std::memory_order_relaxed);
    const std::int64_t opened_now =
        index == start ? note_batch_opened(buffers_[buffer], end < batch_size_) : unset_time;
    using Reference = decltype(*first);
    std::uint32_t slot = index;
    std::exception_ptr error;
    if constexpr (std::is_nothrow_constructible_v<T, Reference>&& noexcept(store.store(
                      std::declval<detail::Completion<R>&>(), 0))&& noexcept(store.accept(0))) {
        // The arrays' addresses in locals: the one-byte state stores may alias anything, so
        // the members would be re-read for every item.
        T* const items = items_.get() + base;
        detail::Completion<R>* const completions = completions_.get() + base;
        std::atomic<std::uint8_t>* const states = slot_states_.get() + base;
        using Category = typename std::iterator_traits<InputIt>::iterator_category;
        if constexpr (std::is_same_v<std::remove_const_t<Store>, BulkPostStore> &&
                      std::is_base_of_v<std::random_access_iterator_tag, Category>) {
            // Fire-and-forget from random-access storage: all the items in one call (a memmove
            // for trivially copyable items from contiguous storage), then their states
            // (callgrind, post_n at B = 256: 15 -> 7 instructions per item on the producer).
            std::uninitialized_copy_n(first, count, items + slot);
            first += static_cast<typename std::iterator_traits<InputIt>::difference_type>(count);
            slot = end;
            // release: publishes the items to the worker that runs this batch.
            detail::store_slot_states<std::memory_order_release>(states + index, count,
                                                                 detail::slot_item);
        } else {
            for (; slot != end; ++slot) {
                const std::size_t i = done + (slot - index);
                const std::uint8_t state = store.store(completions[slot], i)
                                               ? detail::slot_item_completion
                                               : detail::slot_item;
                ::new (static_cast<void*>(items + slot)) T(*first);
                ++first;
                // release: publishes the item and completion to the worker that runs it.
                states[slot].store(state, std::memory_order_release);
                store.accept(i);
            }
        }
    } else {
        MICROBATCH_TRY {
            for (; slot != end; ++slot) {
                const std::size_t i = done + (slot - index);
                detail::Completion<R>& completion = completions_[base + slot];
                // The completion first: if storing it throws, the item is not touched.
                const std::uint8_t state =
                    store.store(completion, i) ? detail::slot_item_completion : detail::slot_item;
                MICROBATCH_TRY {
                    ::new (static_cast<void*>(items_.get() + base + slot)) T(*first);
                }
                MICROBATCH_CATCH_ALL {
                    completion.reset();  // never invoked: the item was not accepted
                    MICROBATCH_RETHROW;
                }
                ++first;
                // release: publishes the item and completion to the worker.
                slot_states_[base + slot].store(state, std::memory_order_release);
                store.accept(i);
            }
        }
        MICROBATCH_CATCH_ALL {
            error = std::current_exception();
        }
    }
    if (error) {
        // Every claimed slot must be published or the batch would wait for it forever: the
        // failed item's and those after it become holes, which the worker skips. Holes are no
        // accepted items: take them off close_for()'s in-flight count (see fill_slot).
        if (cost != 0) {  // a weighed item (count 1) became a hole: take its cost off the batch
            // relaxed: published to the worker by the hole's release store below.
            buffers_[buffer].cost.fetch_sub(cost, std::memory_order_relaxed);
        }
        for (std::uint32_t rest = slot; rest != end; ++rest) {
            slot_states_[base + rest].store(detail::slot_hole, std::memory_order_release);
        }
        // relaxed: a statistic; nothing is published through it.
        finished_items_.fetch_add(static_cast<std::uint64_t>(end - slot),
                                  std::memory_order_relaxed);
    }
    // The opening reading can stand for the seal time only if no item constructor ran long
    // in between: true for the nothrow path's plain copies, not promised otherwise.
    after_fill(lane, head, buffer, start, end, count == 1 ? opened_now : unset_time);
    if (error) {
        stats_.rejected_error();
        std::rethrow_exception(error);
    }
    return slot - index;
}

}  // namespace microbatch
