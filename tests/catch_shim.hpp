#pragma once
// The one place tests include Catch2 from: Debian 12 ships Catch2 v2 (single header), vcpkg and
// Conan ship v3 (split headers). CMake defines MICROBATCH_CATCH2_V3 when it found v3.
#if defined(MICROBATCH_CATCH2_V3) || \
    (!defined(MICROBATCH_CATCH2_V2) && __has_include(<catch2/catch_all.hpp>))
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
