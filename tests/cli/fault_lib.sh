# shellcheck shell=bash
# tests/cli/fault_lib.sh — the fault-injection shim (tests/fault/cmkfault.c) for the CLI tests
# (sourced after lib.sh). CTest sets CMK_FAULT_LIB to the built shim.
#
# FAULT_PRELOAD is what LD_PRELOAD must hold: the shim, behind the ASan runtime when the binary
# is an ASan build (ASan insists on coming first; its read/write interceptors then call the
# shim, which calls libc). FAULT_LOG receives one line per injected fault, so each test can
# prove that the fault it meant was met.

: "${CMK_FAULT_LIB:?set CMK_FAULT_LIB to the built fault-injection shim (libcmkfault.so)}"
FAULT_PRELOAD=$CMK_FAULT_LIB
FAULT_ASAN=$(awk '/libasan\.so/ && !f { print $3; f = 1 }' <<<"$CMKSTORE_LIBS")
[ -z "$FAULT_ASAN" ] || FAULT_PRELOAD="$FAULT_ASAN:$CMK_FAULT_LIB"
FAULT_LOG=$T/faults.log

# faulty RULES CMD...: runs CMD with the shim and RULES (see cmkfault.c), the fault log
# emptied first.
faulty() {
    local rules=$1
    shift
    : >"$FAULT_LOG"
    LD_PRELOAD=$FAULT_PRELOAD CMKFAULT_RULES=$rules CMKFAULT_LOG=$FAULT_LOG "$@"
}

# fault_met: the last run injected at least one fault.
fault_met() {
    [ -s "$FAULT_LOG" ]
}
