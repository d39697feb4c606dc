#pragma once
/**
 * @file detail/completion.hpp
 * @brief `Completion<R>`: the per-item continuation stored inline in a batch slot (a callback
 *        or a handle's state), type-erased without heap allocation.
 */

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#include "microbatch/outcome.hpp"

namespace microbatch::detail {

/**
 * @brief Holds one callable `void(Outcome<R>&&)` in fixed inline storage.
 *
 * The callable must fit `inline_size` bytes, be nothrow-move-constructible and not
 * over-aligned; this is checked at compile time, so storing one never allocates.
 * Not thread-safe: each slot is written by one producer and later read by one worker, with the
 * batcher's slot flags ordering the two.
 *
 * An item's deadline (issue 11) lives here too, in the padding between the operations pointer
 * and the over-aligned storage, so it costs no memory; which completions carry one is told by
 * their operations table (`with_deadline`), so items without a deadline never write it.
 * A callable with a `try_claim()` member (the handle completion) can be cancelled: the worker
 * claims it before the batch runs (see claim()).
 */
template <class R>
class Completion {
public:
    /// Bytes available for the callable's captures (a std::function fits).
    /// (48 is also spelled out in the messages below, in Batcher's documentation and README.)
    static constexpr std::size_t inline_size = 48;

    template <class F>
    static constexpr bool fits =
        sizeof(F) <= inline_size &&
        alignof(F) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<F>;

    Completion() noexcept = default;
    Completion(const Completion&) = delete;
    Completion& operator=(const Completion&) = delete;
    ~Completion() { reset(); }

    /// Stores @p callable (the slot must be empty).
    template <class F>
    void emplace(F&& callable) noexcept(std::is_nothrow_constructible_v<std::decay_t<F>, F&&>) {
        using Stored = std::decay_t<F>;
        static_assert(sizeof(Stored) <= inline_size,
                      "microbatch: the callback is larger than the 48 bytes stored inline in "
                      "each batch slot (detail::Completion<R>::inline_size); capture less, or "
                      "capture a pointer or std::shared_ptr to the rest");
        static_assert(alignof(Stored) <= alignof(std::max_align_t),
                      "microbatch: over-aligned callbacks are not supported");
        static_assert(std::is_nothrow_move_constructible_v<Stored>,
                      "microbatch: callbacks must be nothrow move constructible (every "
                      "capture's move constructor noexcept)");
        ::new (static_cast<void*>(storage_)) Stored(std::forward<F>(callable));
        operations_ = &operations_for<Stored>;
    }

    bool has_value() const noexcept { return operations_ != nullptr; }

    /// No deadline (the value deadline() reports for completions without one).
    static constexpr std::int64_t no_deadline = std::numeric_limits<std::int64_t>::max();

    /// Attaches a deadline (clock ticks) to the stored callable (the slot must be non-empty).
    void set_deadline(std::int64_t ticks) noexcept {
        deadline_ = ticks;
        if (!operations_->has_deadline) {
            operations_ = operations_->with_deadline;
        }
    }

    /// The deadline attached with set_deadline(), or no_deadline. Reads deadline_ only when one
    /// was attached (the field is stale otherwise). The slot must be non-empty.
    std::int64_t deadline() const noexcept {
        return operations_->has_deadline ? deadline_ : no_deadline;
    }

    /// True if the callable can be cancelled (it has a `try_claim()` member).
    bool cancellable() const noexcept {
        return operations_ != nullptr && operations_->claim != nullptr;
    }

    /**
     * @brief Claims a cancellable callable for processing: true if nobody cancelled it first
     *        (from then on a cancel fails). On false the callable was cancelled: it has already
     *        let go of what it completes, and the slot is emptied without invoking it. A
     *        callable that cannot be cancelled is always claimed. Must be non-empty.
     */
    bool claim() noexcept {
        if (operations_->claim == nullptr || operations_->claim(storage_)) {
            return true;
        }
        operations_->destroy(storage_);
        operations_ = nullptr;
        return false;
    }

    /// Invokes the callable with @p outcome and destroys it, even if it throws (the exception
    /// propagates).
    void complete(Outcome<R>&& outcome) {
        const Operations* operations = operations_;
        operations_ = nullptr;
        operations->invoke_and_destroy(storage_, std::move(outcome));
    }

    /// Destroys the callable without invoking it.
    void reset() noexcept {
        if (operations_ != nullptr) {
            operations_->destroy(storage_);
            operations_ = nullptr;
        }
    }

    /// Moves the callable of @p other (which must be non-empty) into this empty slot.
    void take(Completion& other) noexcept {
        deadline_ = other.deadline_;
        operations_ = other.operations_;
        other.operations_ = nullptr;
        operations_->relocate(storage_, other.storage_);
    }

private:
    struct Operations {
        void (*invoke_and_destroy)(void* storage, Outcome<R>&& outcome);
        void (*destroy)(void* storage) noexcept;
        void (*relocate)(void* target, void* source) noexcept;
        bool (*claim)(void* storage) noexcept;  // null: cannot be cancelled
        bool has_deadline;                      // deadline_ is meaningful
        const Operations* with_deadline;        // the same with has_deadline (null if it is set)
    };

    template <class F, class = void>
    struct Claimable : std::false_type {};
    template <class F>
    struct Claimable<F, std::void_t<decltype(std::declval<F&>().try_claim())>> : std::true_type {};

    template <class F>
    static void invoke_and_destroy(void* storage, Outcome<R>&& outcome) {
        F& callable = *static_cast<F*>(storage);
        struct Destroy {
            F& callable;
            ~Destroy() { callable.~F(); }
        } destroy{callable};
        callable(std::move(outcome));
    }
    template <class F>
    static void destroy(void* storage) noexcept {
        static_cast<F*>(storage)->~F();
    }
    template <class F>
    static void relocate(void* target, void* source) noexcept {
        F& from = *static_cast<F*>(source);
        ::new (target) F(std::move(from));
        from.~F();
    }

    template <class F>
    static bool claim_callable(void* storage) noexcept {
        return static_cast<F*>(storage)->try_claim();
    }
    template <class F>
    static constexpr bool (*claim_for())(void*) noexcept {
        if constexpr (Claimable<F>::value) {
            return &claim_callable<F>;
        } else {
            return nullptr;
        }
    }

    template <class F>
    static constexpr Operations operations_with_deadline_for{
        &invoke_and_destroy<F>, &destroy<F>, &relocate<F>, claim_for<F>(), true, nullptr};
    template <class F>
    static constexpr Operations operations_for{
        &invoke_and_destroy<F>, &destroy<F>, &relocate<F>,
        claim_for<F>(),         false,       &operations_with_deadline_for<F>};

    const Operations* operations_ = nullptr;
    std::int64_t deadline_ = 0;  // clock ticks; meaningful only when operations_->has_deadline
    alignas(std::max_align_t) unsigned char storage_[inline_size];
};

/**
 * @brief The completion store of fire-and-forget submits (Batcher and KeyedBatcher): stores
 *        nothing and reports so. An object rather than a function, so that the per-item path
 *        inlines it instead of calling through a pointer. Stateless; thread-safe.
 */
template <class R>
struct NoCompletionStore {
    bool operator()(Completion<R>&) const noexcept { return false; }
};

}  // namespace microbatch::detail
