#pragma once
/**
 * @file baselines/sequential.hpp
 * @brief Baseline 3: the single-thread floor. Items are collected into slices of B and each
 *        slice is processed on the submitting thread: no locks, no atomics, no hand-off.
 *
 * Any concurrent batcher has to beat this to be worth its threads, at least when the
 * per-batch work is trivial.
 */

#include <cstddef>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace microbatch_bench {

/**
 * @brief Collects submitted items into a reused `std::vector` and calls `process` on it each
 *        time it holds B items (and for the rest on `flush`).
 *
 * After each call the vector is cleared and reused, so there is no allocation in steady state.
 * Exceptions from `process` propagate out of `submit` / `flush` (the slice is then dropped).
 *
 * @tparam T The item type (movable).
 *
 * Thread safety: none; one thread only.
 */
template <typename T>
class SequentialBatcher {
public:
    /// @brief Processes one slice of 1 to B items.
    using ProcessFunction = std::function<void(std::vector<T>&)>;

    /// @brief @throws std::invalid_argument if @p batch_size is 0.
    SequentialBatcher(std::size_t batch_size, ProcessFunction process)
        : batch_size_(batch_size), process_(std::move(process)) {
        if (batch_size == 0) {
            throw std::invalid_argument("SequentialBatcher: batch_size must be >= 1 (got 0)");
        }
        slice_.reserve(batch_size);
    }

    /// @brief Appends @p item; processes the slice when it reaches B items.
    void submit(T item) {
        slice_.push_back(std::move(item));
        if (slice_.size() == batch_size_) {
            process_slice();
        }
    }

    /// @brief Processes the partial slice, if any.
    void flush() {
        if (!slice_.empty()) {
            process_slice();
        }
    }

private:
    void process_slice() {
        struct ClearOnExit {
            std::vector<T>& slice;
            ~ClearOnExit() { slice.clear(); }
        } clear_on_exit{slice_};
        process_(slice_);
    }

    std::size_t batch_size_;
    ProcessFunction process_;
    std::vector<T> slice_;
};

}  // namespace microbatch_bench
