// Compile cost, case 2: the umbrella header included and not used.
#include <microbatch/microbatch.hpp>

int main() {}
