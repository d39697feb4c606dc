#pragma once
/**
 * @file detail/config.hpp
 * @brief Internal portability helpers: the throw macro and the cache-line size.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
/// Throws `exception`; in a `-fno-exceptions` build prints its message and aborts instead.
#define MICROBATCH_THROW(exception) throw exception
#else
#define MICROBATCH_THROW(exception)                                          \
    do {                                                                     \
        std::fprintf(stderr, "microbatch: fatal: %s\n", (exception).what()); \
        std::abort();                                                        \
    } while (false)
#endif

namespace microbatch::detail {

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
