/* hello: the example project dropship releases. */
#include <stdio.h>
#include <string.h>

#ifndef HELLO_VERSION
#define HELLO_VERSION "0.0.0"
#endif

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("hello %s\n", HELLO_VERSION);
        return 0;
    }
    printf("Hello from dropship %s!\n", HELLO_VERSION);
    return 0;
}
