#pragma once
/**
 * @file detail/config.hpp
 * @brief Internal portability helpers: the C++17 check (via version.hpp), the exception macros
 * that let a `-fno-exceptions` build terminate with a message, and the cache-line size.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <utility>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
/// 1 when exceptions are enabled, 0 in a `-fno-exceptions` build.
#define MICROBATCH_HAS_EXCEPTIONS 1
#else
#define MICROBATCH_HAS_EXCEPTIONS 0
#endif

#if MICROBATCH_HAS_EXCEPTIONS
/// Throws `exception`; in a `-fno-exceptions` build prints its message and aborts instead.
#define MICROBATCH_THROW(exception) throw exception
/// `try`; without exceptions the block just runs (`MICROBATCH_TRY { ... } MICROBATCH_CATCH_ALL
/// { ... }` becomes `if (true) { ... } else { ... }`).
#define MICROBATCH_TRY try
/// `catch (...)`; without exceptions the handler is dead code (nothing can throw).
#define MICROBATCH_CATCH_ALL catch (...)
/// `throw;` inside a MICROBATCH_CATCH_ALL handler; without exceptions it is unreachable.
#define MICROBATCH_RETHROW throw
#else
#define MICROBATCH_THROW(exception)                                          \
    do {                                                                     \
        std::fprintf(stderr, "microbatch: fatal: %s\n", (exception).what()); \
        std::abort();                                                        \
    } while (false)
#define MICROBATCH_TRY if (true)
#define MICROBATCH_CATCH_ALL else
#define MICROBATCH_RETHROW std::abort()
#endif

#if defined(__GNUC__) || defined(__clang__)
/// Keeps a rarely taken function out of its callers, so their hot path stays short.
#define MICROBATCH_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define MICROBATCH_NOINLINE __declspec(noinline)
#else
#define MICROBATCH_NOINLINE
#endif

namespace microbatch::detail {

/**
 * `std::make_exception_ptr(error)`. Without exceptions there is no exception to point to (libstdc++
 * then returns a null pointer, which would read as success), so it terminates with the message
 * through MICROBATCH_THROW instead.
 */
template <class Error>
std::exception_ptr make_error_ptr(Error error) {
#if MICROBATCH_HAS_EXCEPTIONS
    return std::make_exception_ptr(std::move(error));
#else
    MICROBATCH_THROW(error);
#endif
}

/// Assumed destructive-interference size. A constant rather than
/// std::hardware_destructive_interference_size, which g++ warns about when used in headers
/// (its value may differ between translation units compiled with different -mtune).
inline constexpr std::size_t cache_line_size = 64;

/// Tells the CPU we are in a spin-wait loop (saves power, frees the sibling hyper-thread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace microbatch::detail
