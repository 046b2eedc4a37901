"""Test-session set-up shared by every test module."""

import signal

# A shell without job control starts background commands with SIGINT ignored, and Python then
# leaves Ctrl-C off (no KeyboardInterrupt) in the test process and in every process it starts.
# The tests that press Ctrl-C need it as a terminal has it; with a handler installed here, the
# processes the tests start get the default disposition back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
