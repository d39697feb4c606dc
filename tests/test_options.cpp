// Tests of microbatch::Options: defaults, fluent setters and validation messages.

#include <chrono>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

#include "catch_shim.hpp"
#include "microbatch/options.hpp"

using namespace std::chrono_literals;
using microbatch::Options;

namespace {
std::string validation_message(const Options& options) {
    try {
        options.validate();
    } catch (const std::invalid_argument& error) {
        return error.what();
    }
    return "";
}
}  // namespace

TEST_CASE("Options have documented defaults", "[options]") {
    const Options options;
    CHECK(options.max_batch_size() == 64);
    CHECK(options.max_delay() == 1ms);
    CHECK(options.capacity() == 0);
    CHECK(options.effective_capacity() == 1024);  // max(4 x 64, 1024): issue 13
    CHECK(options.workers() == 1);
    CHECK(options.lanes() == 1);
    CHECK_FALSE(options.executor());
    CHECK_NOTHROW(options.validate());
}

TEST_CASE("Options setters chain and store values", "[options]") {
    const auto options = Options{}.max_batch_size(3).max_delay(5ms).capacity(9).workers(2).executor(
        [](microbatch::Task task) { task(); });
    CHECK(options.max_batch_size() == 3);
    CHECK(options.max_delay() == 5ms);
    CHECK(options.capacity() == 9);
    CHECK(options.effective_capacity() == 9);
    CHECK(options.workers() == 2);
    CHECK(options.executor());
    CHECK(Options{}.lanes(3).lanes() == 3);
}

// Issue 13: the default capacity is max(4 B, 1024) items per lane (it was 4 B, which made every
// small batch wait for a hand-off), the floor lowered where the buffers would not fit.
TEST_CASE("Options default capacity is max(4 batches, 1024 items) per lane", "[options][issue13]") {
    CHECK(Options{}.max_batch_size(1).effective_capacity() == 1024);
    CHECK(Options{}.max_batch_size(16).effective_capacity() == 1024);
    CHECK(Options{}.max_batch_size(100).effective_capacity() == 1100);  // whole batches: 11
    CHECK(Options{}.max_batch_size(256).effective_capacity() == 1024);
    CHECK(Options{}.max_batch_size(257).effective_capacity() == 4 * 257);
    CHECK(Options{}.max_batch_size(4096).effective_capacity() == 4 * 4096);
    CHECK(Options{}.max_batch_size(8).lanes(3).effective_capacity() == 1024 * 3);
    CHECK(Options{}.max_batch_size(8).lanes(3).capacity(10).effective_capacity() == 10);
    // 256 lanes of one-item batches: 1024 buffers per lane would exceed the 65,536 buffers;
    // the floor drops to half a lane's share (128).
    CHECK(Options{}.max_batch_size(1).lanes(256).effective_capacity() == 128 * 256);
    CHECK(Options::default_lane_capacity(1, 256) == 128);
    CHECK(Options::default_lane_capacity(1, 32) == 1024);
    CHECK(Options::default_lane_capacity(1, 33) == 992);
    // The defaults are valid for every batch size and lane count.
    for (std::size_t lanes : {1, 2, 7, 64, 255, 256}) {
        for (std::size_t b : {std::size_t{1}, std::size_t{3}, std::size_t{64}, std::size_t{1000},
                              std::size_t{1} << 16, Options::max_supported_batch_size}) {
            INFO("lanes " << lanes << ", max_batch_size " << b);
            CHECK_NOTHROW(Options{}.max_batch_size(b).lanes(lanes).validate());
        }
    }
}

TEST_CASE("Options validation names the option and the value", "[options]") {
    CHECK(validation_message(Options{}.max_batch_size(0)) ==
          "microbatch::Options: max_batch_size must be in [1, 4194304] (got 0)");
    CHECK(validation_message(Options{}.max_batch_size(Options::max_supported_batch_size + 1)) ==
          "microbatch::Options: max_batch_size must be in [1, 4194304] (got 4194305)");
    CHECK(validation_message(Options{}.max_delay(-3ns)) ==
          "microbatch::Options: max_delay must not be negative (got -3ns)");
    CHECK(validation_message(Options{}.max_batch_size(10).capacity(9)) ==
          "microbatch::Options: capacity must be 0 (automatic) or >= max_batch_size 10 (got 9)");
    CHECK(validation_message(Options{}.workers(0)) ==
          "microbatch::Options: workers must be >= 1 when no executor is set (got 0)");
    CHECK(validation_message(Options{}.lanes(0)) ==
          "microbatch::Options: lanes must be in [1, 256] (got 0)");
    CHECK(validation_message(Options{}.lanes(Options::max_supported_lanes + 1)) ==
          "microbatch::Options: lanes must be in [1, 256] (got 257)");
}

// Issue 15: the batch buffer limit was enforced by the Batcher constructor only, undocumented.
TEST_CASE("Options validation checks the number of batch buffers",
          "[options][regression][issue15]") {
    CHECK(Options::max_supported_batch_buffers == 65536);
    CHECK_NOTHROW(Options{}.max_batch_size(1).capacity(65536).validate());
    CHECK_NOTHROW(Options{}.max_batch_size(4).capacity(4 * 65536).validate());
    CHECK_NOTHROW(Options{}.max_batch_size(1).lanes(3).capacity(65535).validate());
    CHECK(validation_message(Options{}.max_batch_size(1).capacity(65537)) ==
          "microbatch::Options: capacity / max_batch_size must be <= 65536 batches in all lanes "
          "(got capacity 65537, max_batch_size 1, lanes 1)");
    // Rounded up to whole batches per lane: 3 lanes x 21,846 buffers.
    CHECK(validation_message(Options{}.max_batch_size(1).lanes(3).capacity(65536)) ==
          "microbatch::Options: capacity / max_batch_size must be <= 65536 batches in all lanes "
          "(got capacity 65536, max_batch_size 1, lanes 3)");
    CHECK(validation_message(
              Options{}.max_batch_size(4).capacity(std::numeric_limits<std::size_t>::max()))
              .find("capacity / max_batch_size") != std::string::npos);
}

TEST_CASE("Options accept zero workers when an executor is set", "[options]") {
    CHECK_NOTHROW(Options{}.workers(0).executor([](microbatch::Task task) { task(); }).validate());
}

TEST_CASE("Options accept the boundary values", "[options]") {
    CHECK_NOTHROW(Options{}.max_batch_size(1).capacity(1).max_delay(0ns).validate());
    CHECK_NOTHROW(Options{}.max_batch_size(Options::max_supported_batch_size).validate());
    CHECK_NOTHROW(Options{}.max_delay(std::chrono::nanoseconds::max()).validate());
    CHECK_NOTHROW(Options{}.lanes(1).validate());
    CHECK_NOTHROW(Options{}.lanes(Options::max_supported_lanes).validate());
}
