#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages: munged, slurmctld and slurmd on
# localhost, with slurmdbd on MariaDB for accounting (sacct, which submitit asks for job states), started as
# plain daemons (no systemd, no cgroups: it works in a container too). Enough to run
# `python -m makemore.run -m hydra/launcher=slurm ...` for real; tests/test_slurm.py runs against it.
#
#   sudo .ci/slurm-single-node.sh          # install what is missing, configure, start; a no-op when up
#   sudo .ci/slurm-single-node.sh stop     # stop the daemons (config, packages and job history stay)
#
# Needs root and apt-get (Debian 12: slurm-wlm 22.05, config in /etc/slurm). Logs: /var/log/slurm/.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOGS=/var/log/slurm
NODE=$(hostname -s)

die() {
  echo "slurm-single-node: $*" >&2
  exit 1
}

pid_alive() { local pid; pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }
not_alive() { ! pid_alive "$1"; }
munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
dbd_up() { sacctmgr -n list cluster >/dev/null 2>&1; }
node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n 1 || true; }
# up = the controller and the accounting daemon answer, and our node takes jobs (idle, or busy with some)
# with its slurmd alive (the controller notices a dead one only after SlurmdTimeout, 5 minutes)
cluster_up() {
  scontrol ping 2>/dev/null | grep -q UP && dbd_up && [[ $(node_state) =~ ^(idle|mix|alloc)$ ]] &&
    pid_alive /run/slurmd.pid
}
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds, polling every 0.2 s
  local n=$(($1 * 5))
  shift
  for _ in $(seq "$n"); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  "$@"
}

stop() {
  # scontrol shutdown stops slurmctld and the slurmds; the rest, and whatever is left, by pid file
  if command -v scontrol >/dev/null; then scontrol shutdown >/dev/null 2>&1 || true; fi
  for pidfile in /run/slurmctld.pid /run/slurmd.pid /run/slurmdbd.pid /run/munge/munged.pid; do
    if pid_alive "$pidfile"; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    wait_for 10 not_alive "$pidfile" || echo "slurm-single-node: $pidfile: still running" >&2
  done
  if [[ -x /etc/init.d/mariadb ]]; then /etc/init.d/mariadb stop >/dev/null 2>&1 || true; fi
  echo "slurm-single-node: stopped"
}

case "${1:-start}" in
  start) ;;
  stop)
    stop
    exit 0
    ;;
  *) die "usage: $0 [start|stop]" ;;
esac

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts daemons)"
if command -v slurmctld >/dev/null && cluster_up; then
  echo "slurm-single-node: already up: $(sinfo -h -o '%P %D node(s) %t' | head -n 1)"
  exit 0
fi

# 1. Packages: slurm-wlm = slurmctld + slurmd + the client commands (sbatch, sinfo, ...); munge
# authenticates their messages; slurmdbd keeps the job history in MariaDB for sacct.
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
if ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
  command -v apt-get >/dev/null || die "${PACKAGES[*]} are not all installed, and there is no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # their postinst scripts try to start the services; without an init system that is refused, harmlessly
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

# 2. slurm.conf for one node. No cgroups (a container has no writable cgroup tree): processes are tracked
# through /proc (proctrack/linuxproc); task/affinity pins each job to the cores it was given (sbatch -c), as
# a real cluster does, so device.threads=0 sees that many. config_overrides: the node is what this file
# says, not what slurmd detects (a container may show the host's layout).
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo) # 10% left to the OS
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
cat >"$CONF" <<EOF
# written by makemore's .ci/slurm-single-node.sh: one node, $NODE, on localhost
ClusterName=makemore
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
# a job's processes get SIGKILL 5 s after SIGTERM (default 30): submitit ignores SIGTERM, so tests/test_slurm.py's
# requeued job must be killed before it can finish its steps
KillWait=5
# a finished job stays in scontrol show job for 10 minutes (in sacct for good)
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# slurmdbd logs in to MariaDB as root over its unix socket (Debian's root login: no password to keep); the
# file must be private to SlurmUser.
install -m 0600 /dev/null "$DBD_CONF"
cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF

# 3. munged, as the munge user like its systemd unit (the package made the key, /etc/munge/munge.key).
if ! munge_up; then
  [[ -s /etc/munge/munge.key ]] || { mungekey --create && chown munge:munge /etc/munge/munge.key; }
  install -d -o munge -g munge -m 0755 /run/munge # systemd's RuntimeDirectory, made by hand
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged >>/var/log/munge/start.log 2>&1 ||
    die "munged did not start: $(tail -n 1 /var/log/munge/start.log)"
  wait_for 10 munge_up || die "munged runs but munge -n | unmunge fails; see /var/log/munge/munged.log"
fi

# 4. MariaDB, through the package's SysV script: it makes /run/mysqld and waits until the server answers.
if ! mariadb-admin ping >/dev/null 2>&1; then
  /etc/init.d/mariadb start >/dev/null || die "MariaDB did not start (/etc/init.d/mariadb start)"
fi

# 5. slurmdbd, slurmctld, slurmd, in that order; each daemonizes itself. One left from an earlier start is
# restarted, so that it reads this config.
for daemon in slurmdbd slurmctld slurmd; do
  if pid_alive /run/$daemon.pid; then
    kill "$(cat /run/$daemon.pid)"
    wait_for 10 not_alive /run/$daemon.pid || die "$daemon (pid $(cat /run/$daemon.pid)) does not stop"
  fi
  /usr/sbin/$daemon >>"$LOGS/$daemon.start.log" 2>&1 </dev/null ||
    die "$daemon did not start: $(tail -n 1 "$LOGS/$daemon.log" 2>/dev/null)"
  if [[ $daemon == slurmdbd ]]; then
    wait_for 30 dbd_up || die "slurmdbd does not answer: $(tail -n 1 "$LOGS/slurmdbd.log")"
  fi
done

# 6. Wait for the node to register idle, then run a job through the whole path.
node_idle() {
  local state
  state=$(node_state)
  # a node left down or drained by an earlier run comes back
  if [[ $state =~ ^(down|drain|drng) ]]; then scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; fi
  [[ $state == idle ]]
}
wait_for 60 node_idle || die "node $NODE is '$(node_state)', not idle after 60 s; see $LOGS/slurmd.log"
out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || die "srun hostname failed: $out"
echo "slurm-single-node: up: partition cpu (the default), node $NODE idle ($CPUS CPUs, $MEM_MB MB); srun ran on $out"
