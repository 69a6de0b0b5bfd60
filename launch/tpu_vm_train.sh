#!/usr/bin/env bash
# Start `python -m pstroke.train` on every host of a Cloud TPU VM slice.
#
# Usage: launch/tpu_vm_train.sh TPU_NAME ZONE WORKDIR [--config.a.b=value ...]
#
# WORKDIR must be a local path that every host mounts as the same folder (a shared mount such as
# a gcsfuse-mounted bucket), because Orbax writes one checkpoint from all hosts and every host
# restores from it. Each host runs the same command, and --distributed makes it call
# jax.distributed.initialize() before any device is touched. On TPU VMs that call finds the
# coordinator and the process ids from the TPU metadata.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE WORKDIR [--config.a.b=value ...]" >&2
  exit 2
fi
tpu_name=$1
zone=$2
workdir=$3
shift 3

config=${CONFIG:-configs/shapes_base.py}
repo_dir=${REPO_DIR:-\$HOME/pstroke}  # checkout path on the hosts, expanded there

# Quote every override so the remote shell passes it through unchanged.
overrides=""
for arg in "$@"; do
  overrides+=" $(printf '%q' "$arg")"
done

gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" --worker=all --command="
  set -e
  cd $repo_dir
  .venv/bin/python -m pstroke.train --distributed --config=$config --workdir=$workdir$overrides
"
