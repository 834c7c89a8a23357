r"""Runs a command as N JAX processes on this machine (CPU devices, loopback coordinator).

    python launch/local.py --processes=2 --devices_per_process=4 -- \
      mlmjax-train --config=configs/quickstart.py --workdir=/tmp/two_hosts

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which
`mlmjax.cli` passes to `jax.distributed.initialize`, and its own simulated CPU devices. The
processes then behave like hosts of a cluster: each reads its shard of the data, collectives go
through gloo, all take part in checkpointing. Exits with the first non-zero exit code.
"""

import argparse
import os
import socket
import subprocess
import sys


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(command: list[str], processes: int, devices_per_process: int) -> int:
  address = f"127.0.0.1:{free_port()}"
  children = []
  for index in range(processes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": address,
           "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(index),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    children.append(subprocess.Popen(command, env=env))
  codes = [child.wait() for child in children]
  return next((code for code in codes if code), 0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the command to run after --")
  sys.exit(launch(command, args.processes, args.devices_per_process))


if __name__ == "__main__":
  main()
