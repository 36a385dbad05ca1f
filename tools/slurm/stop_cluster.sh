#!/usr/bin/env bash
# stop_cluster.sh - stop the single-node SLURM cluster started by start_cluster.sh.
#
# Stops exactly the daemons whose pids start_cluster.sh recorded in
# $LTPA_SLURM_STATE/pids (checking that each pid still runs the expected program;
# never kills by name), waits for them to exit, then removes the state dir
# (slurmctld state, spool, the private MariaDB data, logs).
# Order: cancel jobs -> slurmd, slurmctld -> slurmdbd -> mariadbd -> munged.
# Safe to run when nothing is running. Exit status 0 unless a daemon could not
# be killed.
#
# Environment:
#   LTPA_SLURM_STATE       state dir used by start_cluster.sh   [/tmp/ltpa-slurm]
#   LTPA_SLURM_KEEP_LOGS=1 keep $LTPA_SLURM_STATE/log (everything else is removed)
set -uo pipefail

STATE="${LTPA_SLURM_STATE:-/tmp/ltpa-slurm}"
PIDS="$STATE/pids"
MARKER="$STATE/.ltpa-slurm-state"

T0=$(date +%s%N)
log() {
    local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
    printf '[stop_cluster %3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 1; }

if [ ! -f "$MARKER" ]; then
    log "no cluster state in $STATE: nothing to stop"
    exit 0
fi

# alive PID -> 0 if PID exists and is not a zombie
alive() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pid_of() {  # pid_of NAME -> recorded pid of NAME if alive and really NAME
    local f="$PIDS/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

failed=0
# stop NAME... : SIGTERM the group, wait up to 30 s, SIGKILL stragglers, wait again
stop() {
    local name pid i any pids=() names=()
    for name in "$@"; do
        if pid=$(pid_of "$name"); then
            kill -TERM "$pid" 2>/dev/null && { pids+=("$pid"); names+=("$name"); }
        else
            [ -e "$PIDS/$name.pid" ] && log "$name not running (stale pid file)"
        fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    for i in $(seq 1 120); do
        any=0
        for pid in "${pids[@]}"; do alive "$pid" && any=1; done
        [ "$any" = 0 ] && break
        sleep 0.25
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}; name=${names[$i]}
        if alive "$pid"; then
            log "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 1 20); do alive "$pid" || break; sleep 0.25; done
        fi
        if alive "$pid"; then
            log "ERROR: $name (pid $pid) is still alive"; failed=1
        else
            # exited; give pid 1 a moment to reap it so that it is really gone
            for _ in $(seq 1 20); do [ -e "/proc/$pid" ] || break; sleep 0.25; done
            log "stopped $name (pid $pid)$([ -e "/proc/$pid" ] && echo ' (zombie, not reaped yet)')"
            rm -f "$PIDS/$name.pid"
        fi
    done
}

# cancel jobs first so that no slurmstepd / job processes outlive slurmd
if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; then
    jobs=$(timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 1 60); do
            [ -z "$(timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
fi

stop slurmd slurmctld
stop slurmdbd
stop mariadbd munged

if [ "$failed" = 1 ]; then
    log "ERROR: some daemons survived; state dir $STATE kept"
    exit 1
fi
if [ "${LTPA_SLURM_KEEP_LOGS:-0}" = 1 ]; then
    # keep the marker too, so that the next start knows the folder is ours and clears it
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name log ! -name .ltpa-slurm-state -exec rm -rf {} +
    log "removed $STATE (logs kept in $STATE/log)"
else
    rm -rf "$STATE"
    log "removed $STATE"
fi
exit 0
