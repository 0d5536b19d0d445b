#!/bin/sh
# Prints its arguments and the params it got on standard input.
echo "args: $*"
echo "params: $(cat)"
