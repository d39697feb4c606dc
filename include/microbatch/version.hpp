#pragma once
/**
 * @file version.hpp
 * @brief Library version macros and the inline ABI namespace.
 */

/// Major version: incremented on incompatible API or ABI changes.
#define MICROBATCH_VERSION_MAJOR 0
/// Minor version: incremented on backwards-compatible additions.
#define MICROBATCH_VERSION_MINOR 1
/// Patch version: incremented on bug fixes.
#define MICROBATCH_VERSION_PATCH 0
/// The version as one integer, `major * 10000 + minor * 100 + patch`.
#define MICROBATCH_VERSION \
    (MICROBATCH_VERSION_MAJOR * 10000 + MICROBATCH_VERSION_MINOR * 100 + MICROBATCH_VERSION_PATCH)
