#!/usr/bin/env bash
# A single-node Slurm cluster with accounting (slurmdbd + MariaDB) under one directory, for the tests of
# `spikeguard study --executor slurm` (tests/test_study_slurm.py) on a Debian machine, as root.
#
#   scripts/slurm_local.sh start DIR   installs the packages if missing, writes the configs, starts munged,
#                                      mariadbd, slurmdbd, slurmctld and slurmd, waits until jobs can run and
#                                      sacct answers, then prints `export SLURM_CONF=DIR/etc/slurm.conf`
#   scripts/slurm_local.sh stop DIR    cancels the jobs and stops each daemon by its PID file in DIR/run
#
# Everything (configs, state, logs, PID files, database, MUNGE key and socket) lives in DIR; traffic stays on
# 127.0.0.1. One partition, `debug` (the default), no GPUs. Daemons are never stopped by name: only the
# process whose id a PID file in DIR holds, and only if its command is the expected daemon.
set -euo pipefail

PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)
PARTITION=debug
CLUSTER=spikeguard

die() { echo "slurm_local: $*" >&2; exit 1; }

# wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds, at most SECONDS
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "slurm_local: $what did not come up within ${seconds} s; logs in $DIR/log" >&2
            tail -n 20 "$DIR"/log/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_if_missing() {
    local missing=0
    for command in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
        command -v "$command" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 \
            || missing=1
    done
    if ((missing)); then
        echo "slurm_local: installing ${PACKAGES[*]}" >&2
        apt-get update -q >&2
        # the packages' own service starts are refused without systemd; the daemons are started below
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
    fi
}

write_configs() {
    local host cpus sockets cores threads memory
    host=$(hostname -s)
    # the node exactly as slurmd sees it, or the controller drains it; memory kept below what it reports
    read -r cpus sockets cores threads memory < <(slurmd -C | head -n 1 | tr ' ' '\n' | awk -F= '
        $1=="CPUs"{c=$2} $1=="SocketsPerBoard"{s=$2} $1=="CoresPerSocket"{k=$2} $1=="ThreadsPerCore"{t=$2}
        $1=="RealMemory"{m=$2} END{print c, s, k, t, int(m * 0.85)}')
    local ctld_port slurmd_port dbd_port db_port
    ctld_port=$(free_port); slurmd_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)
    echo "$db_port" > "$DIR/run/mariadb.port"

    cat > "$DIR/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroup tree in a container: track processes by their parents, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
MpiDefault=none
ReturnToService=2
KillWait=5
# submitit reads job states with sacct, which needs slurmdbd; its socket is named here (not by AuthInfo)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd refuses a config others can read (it holds the database password)
    local password
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    echo "$password" > "$DIR/run/db.password"
    chmod 600 "$DIR/run/db.password"
    (umask 077 && cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=$dbd_port
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munge() {
    (umask 077 && head -c 1024 /dev/urandom > "$DIR/munge/munge.key")
    chmod 400 "$DIR/munge/munge.key"
    munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        --force
    wait_for 20 munged test -S "$DIR/munge/munge.socket"
}

start_mariadb() {
    local port socket=$DIR/mysql/mysqld.sock
    port=$(cat "$DIR/run/mariadb.port")
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
        --auth-root-authentication-method=socket > "$DIR/log/mariadb-install.log" 2>&1
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --bind-address=127.0.0.1 \
        --port="$port" --socket="$socket" --pid-file="$DIR/run/mariadbd.pid" --skip-name-resolve \
        --log-error="$DIR/log/mariadbd.log" < /dev/null > /dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults --socket="$socket" -u root -e 'SELECT 1'
    local password
    password=$(cat "$DIR/run/db.password")
    mariadb --no-defaults --socket="$socket" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

node_idle() { [[ "$(sinfo -h -p "$PARTITION" -o %t)" == idle* ]]; }
cluster_registered() { sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; }

start() {
    [[ $EUID -eq 0 ]] || die "start needs root (the daemons run as root; in CI .ci/run runs it as root)"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [[ -f "$DIR/run/slurmctld.pid" ]] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        die "a cluster already runs from $DIR; stop it first: $0 stop $DIR"
    fi
    local began=$SECONDS
    install_if_missing
    export PATH="$PATH:/usr/sbin:/sbin"
    rm -rf "${DIR:?}"/{etc,munge,mysql,state,run,log}  # a fresh cluster: job ids start again at 1
    mkdir -p "$DIR"/{etc,munge,mysql,state/ctld,state/slurmd,run,log}
    chmod 700 "$DIR/munge"
    export SLURM_CONF=$DIR/etc/slurm.conf
    write_configs
    start_munge
    start_mariadb
    slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 60 slurmdbd sacctmgr -n list cluster
    slurmctld -f "$SLURM_CONF"
    wait_for 60 slurmctld scontrol ping
    wait_for 60 "the cluster's registration with slurmdbd" cluster_registered
    slurmd -f "$SLURM_CONF"
    wait_for 60 "slurmd (node idle)" node_idle
    wait_for 60 sacct sacct -n -X -S now-1minute
    echo "slurm_local: cluster up in $((SECONDS - began)) s (partition $PARTITION, $(sinfo -h -o %c) CPUs, no GPUs)" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
}

# stop_daemon NAME: TERM the process named by DIR/run/NAME.pid if its command is NAME; KILL it after 20 s
stop_daemon() {
    local name=$1 file="$DIR/run/$1.pid" pid
    [[ -f "$file" ]] || return 0
    pid=$(tr -dc 0-9 < "$file")
    if [[ -n "$pid" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] && ((SECONDS < deadline)); do sleep 0.2; done
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
            echo "slurm_local: $name (pid $pid) ignored TERM for 20 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop() {
    [[ -d "$DIR/run" ]] || { echo "slurm_local: no cluster in $DIR" >&2; return 0; }
    DIR=$(cd "$DIR" && pwd)
    export PATH="$PATH:/usr/sbin:/sbin" SLURM_CONF=$DIR/etc/slurm.conf
    if [[ -f "$DIR/run/slurmctld.pid" ]] && command -v scancel >/dev/null; then
        timeout 10 scancel --full --cluster="$CLUSTER" --user="$(id -un)" >/dev/null 2>&1 || true
    fi
    for daemon in "${DAEMONS_STOP_ORDER[@]}"; do
        stop_daemon "$daemon"
    done
    echo "slurm_local: stopped the cluster in $DIR" >&2
}

[[ $# -eq 2 ]] || die "usage: $0 start|stop DIR"
DIR=$2
case $1 in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
