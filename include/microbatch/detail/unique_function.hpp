#pragma once
/**
 * @file detail/unique_function.hpp
 * @brief `UniqueFunction<Result(Args...)>`: a move-only, type-erased callable (what
 *        `std::function` is, minus the copy requirement), used to store `process_batch`.
 */

#include <memory>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

template <class Signature>
class UniqueFunction;

/**
 * @brief Owns one callable invocable as `Result(Args...)`; move-only, so the callable may be
 *        too (e.g. a lambda capturing a `std::unique_ptr`).
 *
 * The callable lives on the heap (one allocation when constructed; moves just pass the
 * pointer). Calling an empty UniqueFunction is undefined: the Batcher calls only the one of its
 * two batch functions (plain or per-item form) that it stored.
 * Not thread-safe to move or destroy while called; concurrent calls are as safe as concurrent
 * calls of the callable itself (the batcher's workers call it concurrently).
 */
template <class Result, class... Args>
class UniqueFunction<Result(Args...)> {
public:
    UniqueFunction() noexcept = default;

    /// Stores a decayed copy (or move) of @p callable.
    template <class F, class Stored = std::decay_t<F>,
              class = std::enable_if_t<!std::is_same_v<Stored, UniqueFunction>>>
    explicit UniqueFunction(F&& callable)
        : object_(new Stored(std::forward<F>(callable)), &destroy<Stored>),
          invoke_(&invoke_stored<Stored>) {
        static_assert(std::is_invocable_r_v<Result, Stored&, Args...>,
                      "microbatch: the callable cannot be called with this signature");
    }

    UniqueFunction(UniqueFunction&& other) noexcept = default;
    UniqueFunction& operator=(UniqueFunction&& other) noexcept = default;
    UniqueFunction(const UniqueFunction&) = delete;
    UniqueFunction& operator=(const UniqueFunction&) = delete;
    ~UniqueFunction() = default;

    /// True if a callable is stored.
    explicit operator bool() const noexcept { return object_ != nullptr; }

    /// Calls the stored callable (as a non-const lvalue, like `std::function`).
    Result operator()(Args... args) const {
        return invoke_(object_.get(), std::forward<Args>(args)...);
    }

private:
    using Deleter = void (*)(void*) noexcept;

    template <class Stored>
    static void destroy(void* object) noexcept {
        delete static_cast<Stored*>(object);
    }
    template <class Stored>
    static Result invoke_stored(void* object, Args&&... args) {
        if constexpr (std::is_void_v<Result>) {
            (*static_cast<Stored*>(object))(std::forward<Args>(args)...);
        } else {
            return (*static_cast<Stored*>(object))(std::forward<Args>(args)...);
        }
    }

    std::unique_ptr<void, Deleter> object_{nullptr, nullptr};
    Result (*invoke_)(void*, Args&&...) = nullptr;
};

}  // namespace microbatch::detail
