#pragma once
/**
 * @file outcome.hpp
 * @brief `microbatch::Outcome<R>`: the result of one item, a value or an exception.
 */

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/errors.hpp"

namespace microbatch {

/**
 * @brief The outcome of processing one item: a value of type @p R, or the exception that the
 *        item's batch failed with. Callbacks passed to `Batcher::submit(item, callback)`
 *        receive one.
 *
 * `Outcome<void>` carries only success or an exception.
 * Thread safety: a plain value type.
 */
template <class R>
class Outcome {
public:
    /// @brief A successful outcome holding @p value.
    explicit Outcome(R value) : value_(std::move(value)) {}
    /// @brief A failed outcome holding @p error (must not be null).
    explicit Outcome(std::exception_ptr error) noexcept : error_(std::move(error)) {}

    /// @brief True if the item was processed successfully.
    bool has_value() const noexcept { return value_.has_value(); }
    /// @brief Same as has_value().
    explicit operator bool() const noexcept { return has_value(); }

    /// @brief The value; rethrows the item's exception if it failed.
    R& value() & {
        rethrow_if_error();
        return *value_;
    }
    /// @copydoc value()
    const R& value() const& {
        rethrow_if_error();
        return *value_;
    }
    /// @brief Moves the value out; rethrows the item's exception if it failed.
    R&& value() && {
        rethrow_if_error();
        return std::move(*value_);
    }
    /// @brief The exception the item failed with, or null on success.
    const std::exception_ptr& error() const noexcept { return error_; }

private:
    void rethrow_if_error() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
    }

    std::optional<R> value_;
    std::exception_ptr error_;
};

/// @brief `Outcome` of an item whose batch function returns nothing: success or an exception.
template <>
class Outcome<void> {
public:
    /// @brief A successful outcome.
    Outcome() noexcept = default;
    /// @brief A failed outcome holding @p error (null means success).
    explicit Outcome(std::exception_ptr error) noexcept : error_(std::move(error)) {}

    /// @brief True if the item was processed successfully.
    bool has_value() const noexcept { return !error_; }
    /// @brief Same as has_value().
    explicit operator bool() const noexcept { return has_value(); }
    /// @brief Returns on success; rethrows the item's exception if it failed.
    void value() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
    }
    /// @brief The exception the item failed with, or null on success.
    const std::exception_ptr& error() const noexcept { return error_; }

private:
    std::exception_ptr error_;
};

}  // namespace microbatch
