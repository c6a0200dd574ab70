#!/usr/bin/env bash
# A one-node Slurm on 127.0.0.1 for tests/runtime/test_slurm.py: slurmctld + slurmd with their own config, ports, state
# folders and munge daemon under STATE (default /tmp/distill-slurm), so a machine's own Slurm or munge, if any,
# is left alone. Installs slurm-wlm and munge with apt-get when they are missing (root only: CI's fresh Debian).
# Idempotent: when this Slurm already answers, it exits at once. Prints `export SLURM_CONF=...` on success;
# exit 3 with the reason when it cannot run here (not root, no apt-get, a daemon that will not start).
#   tests/runtime/slurm/start_local_slurm.sh [STATE]        stop: kill $(cat STATE/*.pid)
set -euo pipefail
state=${1:-/tmp/distill-slurm}
ctld_port=${DISTILL_SLURMCTLD_PORT:-16817}  # not Slurm's 6817/6818: a real Slurm on this machine keeps its ports
slurmd_port=${DISTILL_SLURMD_PORT:-16818}
start_seconds=30  # for slurmctld to answer and the node to turn idle (seconds, on 2 busy cores)
cannot() { echo "local slurm: $*" >&2; exit 3; }

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  [[ $(id -u) -eq 0 ]] || cannot "slurm-wlm and munge are not installed and this is not root (apt-get install -y slurm-wlm munge)"
  command -v apt-get > /dev/null || cannot "slurm-wlm and munge are not installed and there is no apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } > "/tmp/distill-slurm-apt.log" 2>&1 ||
    cannot "apt-get install slurm-wlm munge failed (/tmp/distill-slurm-apt.log)"
fi
[[ $(id -u) -eq 0 ]] || cannot "slurmd runs jobs as their user and must start as root (SlurmUser=root here)"

export SLURM_CONF="$state/slurm.conf"
if [[ -f "$SLURM_CONF" ]] && scontrol ping 2> /dev/null | grep -q "is UP"; then
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
mkdir -p "$state/ctld" "$state/slurmd" "$state/munge"
chmod 700 "$state/munge"
[[ -f "$state/munge/munge.key" ]] || { dd if=/dev/urandom bs=1 count=1024 of="$state/munge/munge.key" 2> /dev/null; chmod 400 "$state/munge/munge.key"; }
cat > "$SLURM_CONF" << EOF
ClusterName=distilltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
  --pid-file="$state/munged.pid" --log-file="$state/munged.log" --seed-file="$state/munge/munge.seed" ||
  cannot "munged did not start ($state/munged.log)"
slurmctld -f "$SLURM_CONF" || cannot "slurmctld did not start ($state/slurmctld.log)"
slurmd -f "$SLURM_CONF" -N localhost || cannot "slurmd did not start ($state/slurmd.log)"
for _ in $(seq "$start_seconds"); do
  if sinfo -h -o %t 2> /dev/null | grep -q idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 1
done
cannot "the node did not turn idle in ${start_seconds} s: $(sinfo -h -o '%t %E' 2>&1 | head -1); see $state/*.log"
