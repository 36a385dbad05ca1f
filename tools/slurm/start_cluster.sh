#!/usr/bin/env bash
# start_cluster.sh - bring up a throw-away single-node SLURM cluster on this host
# (localhost only, with accounting: munged + MariaDB + slurmdbd + slurmctld + slurmd)
# for ltpa-prep's CI and local tests.
#
# Run as root, non-interactive. Debian/Ubuntu with apt (tested on Debian 12,
# Slurm 22.05). No systemd needed: every daemon is started here in the
# foreground of its own session, and its pid is recorded in $STATE/pids/.
# Stop with tools/slurm/stop_cluster.sh (kills exactly those pids).
#
# Environment (all optional):
#   LTPA_SLURM_STATE      state dir (pids, logs, spool, MariaDB data)  [/tmp/ltpa-slurm]
#   LTPA_SLURM_CLUSTER    ClusterName                                  [ltpa]
#   LTPA_SLURM_PARTITION  partition name (the default partition)       [debug]
#   LTPA_SLURM_ACCOUNT    accounting account; root + LTPA_SLURM_USERS get it as default [ltpa]
#   LTPA_SLURM_USERS      extra users to add to the account (space separated) [$SUDO_USER]
#   LTPA_SLURM_DEFMEM     DefMemPerCPU in MB                           [512]
#   LTPA_SLURM_DB_PORT    TCP port of the private MariaDB (127.0.0.1)  [16819]
#   LTPA_SLURM_TIMEOUT    seconds to wait for each daemon              [60]
#   LTPA_SLURM_NO_INSTALL=1  never call apt-get (fail if packages are missing)
#
# Writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf (the default paths, so
# sbatch/sacct/snakemake need no SLURM_CONF). An existing slurm.conf not written by
# this script is saved once as slurm.conf.ltpa-bak.
#
# The cluster is fresh on every start: the state dir (slurmctld state and the
# accounting database) is created anew, so job ids start at 1 again.
set -euo pipefail

STATE="${LTPA_SLURM_STATE:-/tmp/ltpa-slurm}"
CLUSTER="${LTPA_SLURM_CLUSTER:-ltpa}"
PARTITION="${LTPA_SLURM_PARTITION:-debug}"
ACCOUNT="${LTPA_SLURM_ACCOUNT:-ltpa}"
EXTRA_USERS="${LTPA_SLURM_USERS-${SUDO_USER:-}}"
DEFMEM="${LTPA_SLURM_DEFMEM:-512}"
DB_PORT="${LTPA_SLURM_DB_PORT:-16819}"
TIMEOUT="${LTPA_SLURM_TIMEOUT:-60}"

SLURM_ETC=/etc/slurm
SLURM_CONF="$SLURM_ETC/slurm.conf"
SLURMDBD_CONF="$SLURM_ETC/slurmdbd.conf"
MARKER="$STATE/.ltpa-slurm-state"
PIDS="$STATE/pids"
LOGS="$STATE/log"
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=ltpa_ci_only        # private DB on 127.0.0.1, removed on stop
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order
SLURM_PORTS=(6817 6818 6819)

T0=$(date +%s%N)
log() {
    local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
    printf '[start_cluster %3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
# die MESSAGE [DAEMON...] : print the log tail of the named daemons and exit 1
die() {
    local msg=$1 d; shift
    log "ERROR: $msg"
    for d in "$@"; do
        if [ -s "$LOGS/$d.log" ]; then
            echo "----- last 40 lines of $LOGS/$d.log -----" >&2
            tail -n 40 "$LOGS/$d.log" >&2
            echo "-----" >&2
        fi
    done
    [ "$#" -eq 0 ] || log "the daemons started so far keep running; clean up with: $(dirname "$0")/stop_cluster.sh"
    exit 1
}
trap 'rc=$?; log "ERROR: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND"; exit $rc' ERR

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons as munge/mysql/slurm)"
case "$STATE" in /|/tmp|/tmp/|"") die "refusing LTPA_SLURM_STATE='$STATE'";; esac
[[ "$DB_PORT" =~ ^[0-9]+$ ]] && [ "$DB_PORT" -ge 1024 ] && [ "$DB_PORT" -le 65535 ] \
    || die "LTPA_SLURM_DB_PORT must be a port number 1024-65535, not '$DB_PORT'"
[[ "$DEFMEM" =~ ^[0-9]+$ ]] || die "LTPA_SLURM_DEFMEM must be a number (MB), not '$DEFMEM'"

# pid_of NAME -> prints the recorded pid of daemon NAME if it is alive and really NAME
# alive PID -> 0 if PID exists and is not a zombie
alive() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pid_of() {
    local f="$PIDS/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

# wait_for DESCRIPTION DAEMON COMMAND... : retry COMMAND every 0.25 s up to TIMEOUT s;
# gives up early if DAEMON (when not '-') has died
wait_for() {
    local what=$1 daemon=$2; shift 2
    local deadline=$(( $(date +%s) + TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        if [ "$daemon" != - ] && ! pid_of "$daemon" >/dev/null; then
            log "$daemon exited"
            return 1
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after ${TIMEOUT}s"; return 1; }
        sleep 0.25
    done
    log "$what: ok"
}

# launch NAME COMMAND... : start COMMAND (which must exec NAME and stay in the
# foreground) in a new session, stdout+stderr to $LOGS/NAME.log, record its pid
launch() {
    local name=$1 pid; shift
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    pid=$!
    echo "$pid" > "$PIDS/$name.pid"
    sleep 0.2
    pid_of "$name" >/dev/null || { sleep 1; pid_of "$name" >/dev/null; } \
        || die "$name (pid $pid) exited right after start" "$name"
    log "started $name (pid $pid)"
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# ----------------------------------------------------------------- already running?
if [ -f "$MARKER" ]; then
    alive=(); dead=()
    for d in "${DAEMONS[@]}"; do
        [ "$d" = munged ] && [ -f "$STATE/munged.external" ] && continue   # not ours
        if pid_of "$d" >/dev/null; then alive+=("$d"); else dead+=("$d"); fi
    done
    if [ "${#dead[@]}" -eq 0 ] && [ -f "$SLURM_CONF" ] \
        && grep -q "^# ltpa-prep state: $STATE\$" "$SLURM_CONF" \
        && timeout 20 scontrol ping >/dev/null 2>&1 && timeout 20 sacct -n -X >/dev/null 2>&1 \
        && [[ "$(timeout 20 sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null)" =~ ^(idle|mix|alloc|comp)$ ]]; then
        log "cluster already running (state $STATE):"
        for d in "${DAEMONS[@]}"; do log "  $d pid $(pid_of "$d" || echo "- (not started by us)")"; done
        exit 0
    fi
    if [ "${#alive[@]}" -gt 0 ]; then
        log "found a partial/unhealthy cluster from an earlier run (alive: ${alive[*]}; dead: ${dead[*]:-none}); stopping it first"
        LTPA_SLURM_STATE="$STATE" bash "$(dirname "$0")/stop_cluster.sh" || die "could not stop the earlier cluster"
    fi
fi
if [ -e "$STATE" ]; then
    if [ -f "$MARKER" ] || [ -z "$(ls -A "$STATE" 2>/dev/null)" ]; then
        rm -rf "$STATE"          # leftovers of an earlier run: start from a clean slate
    else
        die "$STATE exists and was not created by this script; remove it or set LTPA_SLURM_STATE"
    fi
fi

# ports must be free BEFORE we overwrite the config of whatever else may be running
for p in "${SLURM_PORTS[@]}" "$DB_PORT"; do
    if port_busy "$p"; then
        die "TCP port $p is already in use (another slurm/mariadb?): $(ss -Hltnp "sport = :$p" 2>/dev/null)"
    fi
done

# ----------------------------------------------------------------- 1. packages
PKGS=(munge slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin mariadb-server mariadb-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "${LTPA_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]} (LTPA_SLURM_NO_INSTALL=1)"
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]} and no apt-get"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # keep the packages' maintainer scripts from starting services themselves
    policy=/usr/sbin/policy-rc.d
    policy_bak=""
    if [ -e "$policy" ]; then policy_bak=$(mktemp); cp -p "$policy" "$policy_bak"; fi
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"
    restore_policy() { if [ -n "$policy_bak" ]; then mv -f "$policy_bak" "$policy"; else rm -f "$policy"; fi; }
    apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    ok=0
    if [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep _Packages)" ] \
        && apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
        ok=1
    else
        log "apt-get install failed or no package lists: running apt-get update once"
        if apt-get update -q -o DPkg::Lock::Timeout=600 </dev/null \
            && apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
            ok=1
        fi
    fi
    restore_policy
    [ "$ok" = 1 ] || die "apt-get could not install: ${missing[*]}"
    log "packages installed"
else
    log "packages already installed"
fi

# ----------------------------------------------------------------- 2. state dir
install -d -m 0755 "$STATE" "$PIDS" "$LOGS"
# the marker says whose cluster this is: tests use a cluster only when its slurmctld (pid in
# $PIDS) is alive and scontrol reports this cluster name and this state folder
printf 'cluster=%s\nstate=%s\n' "$CLUSTER" "$STATE" > "$MARKER"
install -d -o slurm -g slurm -m 0755 "$STATE/slurmctld" "$STATE/run-slurm"
install -d -o root -g root -m 0755 "$STATE/slurmd"
install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
install -d -o mysql -g mysql -m 0755 "$STATE/run-mysql"
install -d -o root -g root -m 0755 "$SLURM_ETC"
# munge: default socket dir (clients and slurm use the default socket path)
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0600 /etc/munge/munge.key

# ----------------------------------------------------------------- 3. config (before ANY slurm client command)
NODE=$(hostname -s)
HW=$(/usr/sbin/slurmd -C 2>/dev/null | head -1)   # needs no slurm.conf
hw() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(hw CPUs); BOARDS=$(hw Boards); SOCKETS=$(hw SocketsPerBoard)
CORES=$(hw CoresPerSocket); THREADS=$(hw ThreadsPerCore); MEM=$(hw RealMemory)
[ -n "$CPUS" ] && [ -n "$MEM" ] && [ -n "$CORES" ] || die "could not parse 'slurmd -C': $HW"
REALMEM=$(( MEM * 90 / 100 ))                       # a bit below the machine's memory
[ "$DEFMEM" -le $(( REALMEM / CPUS )) ] || DEFMEM=$(( REALMEM / CPUS ))

# bind slurmctld/slurmd/srun to loopback when the host name resolves to 127.x
# (true on Debian CI images via /etc/hosts); otherwise keep Slurm's default
COMM=""
if getent ahostsv4 "$NODE" 2>/dev/null | awk 'NR==1{exit !($1 ~ /^127\./)}'; then
    COMM="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
else
    log "WARNING: '$NODE' does not resolve to 127.x; slurmctld/slurmd will listen on all addresses"
fi

if [ -f "$SLURM_CONF" ] && ! grep -q '^# ltpa-prep state:' "$SLURM_CONF" && [ ! -e "$SLURM_CONF.ltpa-bak" ]; then
    cp -p "$SLURM_CONF" "$SLURM_CONF.ltpa-bak"
    log "saved the existing $SLURM_CONF as $SLURM_CONF.ltpa-bak"
fi
cat > "$SLURM_CONF" <<EOF
# generated by ltpa-prep tools/slurm/start_cluster.sh - single node, localhost only
# ltpa-prep state: $STATE
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run-slurm/slurmctld.pid
SlurmdPidFile=$STATE/slurmd/slurmd.pid
$COMM
# no cgroups (containers, gVisor, CI runners): no cgroup.conf needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
# finished jobs stay visible in squeue for 5 min
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS Boards=${BOARDS:-1} SocketsPerBoard=${SOCKETS:-1} CoresPerSocket=$CORES ThreadsPerCore=${THREADS:-1} RealMemory=$REALMEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$DEFMEM
EOF
chmod 0644 "$SLURM_CONF"
cat > "$SLURMDBD_CONF" <<EOF
# generated by ltpa-prep tools/slurm/start_cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
PidFile=$STATE/run-slurm/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
chown slurm:slurm "$SLURMDBD_CONF"; chmod 0600 "$SLURMDBD_CONF"   # slurmdbd insists on this
log "wrote $SLURM_CONF and $SLURMDBD_CONF (node $NODE: $CPUS CPUs, RealMemory=$REALMEM MB, DefMemPerCPU=$DEFMEM MB)"


# ----------------------------------------------------------------- 4. munged
if timeout 5 sh -c 'munge -n | unmunge' >/dev/null 2>&1; then
    log "a munged is already serving /run/munge (not started by us); using it"
    : > "$STATE/munged.external"
else
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2.lock
    launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for "munged" munged sh -c 'munge -n | unmunge' || die "munged did not come up" munged
fi

# ----------------------------------------------------------------- 5. MariaDB (private instance, 127.0.0.1:$DB_PORT)
log "initialising a private MariaDB in $STATE/mysql"
mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
    --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed" mariadb-install
MYSOCK="$STATE/run-mysql/mysqld.sock"
launch mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
    --socket="$MYSOCK" --pid-file="$STATE/run-mysql/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --max-connections=50
wait_for "mariadbd" mariadbd mariadb-admin --no-defaults --socket="$MYSOCK" ping || die "mariadbd did not come up" mariadbd
mariadb --no-defaults --socket="$MYSOCK" -e "
    CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
    FLUSH PRIVILEGES;" || die "could not create the accounting database" mariadbd

# ----------------------------------------------------------------- 6. slurmdbd + accounting
launch slurmdbd /usr/sbin/slurmdbd -D
wait_for "slurmdbd" slurmdbd sacctmgr -n list cluster || die "slurmdbd did not come up" slurmdbd
sacctmgr_q() { timeout 30 sacctmgr -i "$@" >/dev/null; }
sacctmgr -nP list cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr_q add cluster "$CLUSTER" || die "sacctmgr add cluster $CLUSTER failed" slurmdbd
sacctmgr -nP list account "$ACCOUNT" format=account | grep -qx "$ACCOUNT" \
    || sacctmgr_q add account "$ACCOUNT" Cluster="$CLUSTER" Description="ltpa-prep tests" Organization=ltpa \
    || die "sacctmgr add account $ACCOUNT failed" slurmdbd
for u in root $EXTRA_USERS; do
    id "$u" >/dev/null 2>&1 || { log "WARNING: no such user '$u', not added to account $ACCOUNT"; continue; }
    if ! sacctmgr -nP list assoc user="$u" account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx "$u"; then
        sacctmgr_q add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" DefaultAccount="$ACCOUNT" \
            || die "sacctmgr add user $u failed" slurmdbd
    fi
    sacctmgr_q modify user where name="$u" cluster="$CLUSTER" set DefaultAccount="$ACCOUNT" || true
done
log "accounting: cluster '$CLUSTER', account '$ACCOUNT', users: root $EXTRA_USERS"

# ----------------------------------------------------------------- 7. slurmctld + slurmd
launch slurmctld /usr/sbin/slurmctld -D -i
wait_for "slurmctld" slurmctld scontrol ping || die "slurmctld did not come up" slurmctld
launch slurmd /usr/sbin/slurmd -D -N "$NODE"
# idle, and slurmd has really registered (SlurmdStartTime is None before that)
node_idle() {
    [ "$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null)" = idle ] \
        && scontrol show node "$NODE" 2>/dev/null | grep -q 'SlurmdStartTime=[0-9]'
}
wait_for "node $NODE idle" slurmd node_idle || {
    sinfo -N -l >&2 || true
    die "node $NODE did not become idle" slurmd slurmctld; }
wait_for "sacct answers" slurmdbd sacct -n -X || die "sacct does not answer" slurmdbd slurmctld

ms=$(( ($(date +%s%N) - T0) / 1000000 ))
log "SLURM $(sinfo -V | awk '{print $2}') up in $((ms / 1000)).$(( (ms % 1000) / 100 ))s: node $NODE, partition '$PARTITION', account '$ACCOUNT', cluster '$CLUSTER', state $STATE"
for d in "${DAEMONS[@]}"; do
    pid=$(pid_of "$d" || true)
    [ -n "$pid" ] && log "  $d pid $pid" || true
done
sinfo >&2
