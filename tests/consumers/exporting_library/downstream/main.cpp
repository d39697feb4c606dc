// Links the installed squares library; exits non-zero if it misbehaves.
#include "squares.hpp"

#include <cstdio>
#include <vector>

int main() {
    const std::vector<int> squares = square_all({1, 2, 3, 4, 5});
    if (squares != std::vector<int>{1, 4, 9, 16, 25}) {
        std::fprintf(stderr, "square_all returned the wrong values\n");
        return 1;
    }
    std::printf("squares over microbatch %d.%d.%d OK\n", MICROBATCH_VERSION_MAJOR,
                MICROBATCH_VERSION_MINOR, MICROBATCH_VERSION_PATCH);
    return 0;
}
