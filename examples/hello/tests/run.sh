#!/bin/sh
# The project's test command: compile natively and check what it prints.
set -eu
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -Wall -Werror -O2 -DHELLO_VERSION='"test"' -o "$out/hello" src/hello.c
[ "$("$out/hello")" = "Hello from dropship test!" ]
[ "$("$out/hello" --version)" = "hello test" ]
echo "tests passed"
