#pragma once
// Replaces every form of global operator new/delete in the test program that includes this
// header (include it from exactly one translation unit). All of them call two functions the
// including file defines:
//
//   void* test_allocate(std::size_t size, std::size_t alignment) noexcept;
//       // alignment 0: the default; returns nullptr to fail (throwing forms then throw bad_alloc)
//   void test_release(void* memory, bool aligned) noexcept;
//       // memory may be null; aligned: it came from an std::align_val_t form
//
// Clang links its sanitizer runtimes statically with --whole-archive, and they define operator
// new themselves: a replacement cannot link there, so MICROBATCH_TEST_REPLACES_NEW is 0 under
// clang's ASan/TSan/MSan and nothing is replaced. g++'s shared runtimes are interposed by the
// replacement, so it works under g++'s sanitizers.

#include <cstddef>
#include <new>

#if defined(__clang__) && defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define MICROBATCH_TEST_REPLACES_NEW 0
#endif
#endif
#ifndef MICROBATCH_TEST_REPLACES_NEW
#define MICROBATCH_TEST_REPLACES_NEW 1
#endif

#if defined(_MSC_VER)
#define MICROBATCH_TEST_NOINLINE __declspec(noinline)
#else
#define MICROBATCH_TEST_NOINLINE __attribute__((noinline))
#endif

// Out of line, so that g++ does not pair the malloc()/free() inside them with operator
// new/delete and warn (-Wmismatched-new-delete) about what is a matched replacement pair.
MICROBATCH_TEST_NOINLINE void* test_allocate(std::size_t size, std::size_t alignment) noexcept;
MICROBATCH_TEST_NOINLINE void test_release(void* memory, bool aligned) noexcept;

#if MICROBATCH_TEST_REPLACES_NEW
namespace replace_operator_new_detail {
inline void* allocate_or_throw(std::size_t size, std::size_t alignment) {
    if (void* memory = test_allocate(size, alignment)) {
        return memory;
    }
    throw std::bad_alloc();
}
inline std::size_t alignment_of(std::align_val_t align) noexcept {
    return static_cast<std::size_t>(align);
}
}  // namespace replace_operator_new_detail

void* operator new(std::size_t size) {
    return replace_operator_new_detail::allocate_or_throw(size, 0);
}
void* operator new[](std::size_t size) {
    return replace_operator_new_detail::allocate_or_throw(size, 0);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return test_allocate(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return test_allocate(size, 0);
}
void* operator new(std::size_t size, std::align_val_t align) {
    return replace_operator_new_detail::allocate_or_throw(
        size, replace_operator_new_detail::alignment_of(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
    return replace_operator_new_detail::allocate_or_throw(
        size, replace_operator_new_detail::alignment_of(align));
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return test_allocate(size, replace_operator_new_detail::alignment_of(align));
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return test_allocate(size, replace_operator_new_detail::alignment_of(align));
}
void operator delete(void* memory) noexcept {
    test_release(memory, false);
}
void operator delete[](void* memory) noexcept {
    test_release(memory, false);
}
void operator delete(void* memory, std::size_t) noexcept {
    test_release(memory, false);
}
void operator delete[](void* memory, std::size_t) noexcept {
    test_release(memory, false);
}
void operator delete(void* memory, const std::nothrow_t&) noexcept {
    test_release(memory, false);
}
void operator delete[](void* memory, const std::nothrow_t&) noexcept {
    test_release(memory, false);
}
void operator delete(void* memory, std::align_val_t) noexcept {
    test_release(memory, true);
}
void operator delete[](void* memory, std::align_val_t) noexcept {
    test_release(memory, true);
}
void operator delete(void* memory, std::size_t, std::align_val_t) noexcept {
    test_release(memory, true);
}
void operator delete[](void* memory, std::size_t, std::align_val_t) noexcept {
    test_release(memory, true);
}
void operator delete(void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
    test_release(memory, true);
}
void operator delete[](void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
    test_release(memory, true);
}
#endif  // MICROBATCH_TEST_REPLACES_NEW
