// The public header of the "squares" library (packaging.exporting_library test). It includes a
// microbatch header, so its users need microbatch's include directory: the usage requirement
// travels through squares' exported target.
#pragma once

#include <microbatch/version.hpp>

#include <vector>

/// Squares every value through a microbatch::Batcher.
std::vector<int> square_all(const std::vector<int>& values);
