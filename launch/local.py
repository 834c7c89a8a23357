r"""Runs a command as N JAX processes on this machine (CPU devices, loopback coordinator).

    python launch/local.py --processes=2 --devices_per_process=4 -- \
      mlmjax-train --config=configs/quickstart.py --workdir=/tmp/two_hosts

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which
`mlmjax.cli` passes to `jax.distributed.initialize`, and its own simulated CPU devices. The
processes then behave like hosts of a cluster: each reads its shard of the data, collectives go
through gloo, all take part in checkpointing.

When one process fails (an error, or killed), the launcher stops the others at once (SIGTERM,
then SIGKILL after a few seconds), says which one failed, and exits with its code, as a cluster
scheduler does (`srun --kill-on-bad-exit`, torchrun): the others could only wait for it inside
a collective until JAX's heartbeat timeout. The last checkpoint stays; the same command resumes.

`--private_tmp=DIR` gives process i its own TMPDIR, DIR/process_i, as the only local disk it
writes (mlmjax's local caches go there): with a workdir on a bucket, the processes then share
nothing but the bucket, like the hosts of a TPU pod.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

GRACE_S = 5.0  # after SIGTERM, before SIGKILL


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(command: list[str], processes: int, devices_per_process: int,
           private_tmp: str = "") -> int:
  address = f"127.0.0.1:{free_port()}"
  children = []
  for index in range(processes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": address,
           "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(index),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    if private_tmp:
      env["TMPDIR"] = os.path.join(os.path.abspath(private_tmp), f"process_{index}")
      os.makedirs(env["TMPDIR"], exist_ok=True)
    # A session of its own: stopping a process also stops what it started (its workers).
    children.append(subprocess.Popen(command, env=env, start_new_session=True))
  try:
    return wait_all(children)
  except KeyboardInterrupt:
    stop(children)
    return 130


def describe(code: int) -> str:
  if code < 0:
    return f"was killed by {signal.Signals(-code).name}"
  return f"exited with code {code}"


def wait_all(children: list[subprocess.Popen]) -> int:
  """0 once every child has exited with 0; at the first failure, stops the rest and returns
  its exit code (128 + the signal for a killed one, as a shell reports it)."""
  while True:
    codes = [child.poll() for child in children]
    failed = next((i for i, code in enumerate(codes) if code), None)
    if failed is not None:
      code = codes[failed]
      others = sum(code is None for code in codes)
      print(f"launch/local.py: process {failed} of {len(children)} {describe(code)}; "
            f"stopping the other {others} running. Its last checkpoint stays: run the same "
            "command again to resume.", file=sys.stderr, flush=True)
      stop(children)
      return 128 - code if code < 0 else code
    if all(code == 0 for code in codes):
      return 0
    time.sleep(0.1)


def stop(children: list[subprocess.Popen]) -> None:
  """SIGTERM to every running child's process group, SIGKILL to those left after GRACE_S."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for child in children:
      if child.poll() is None:
        try:
          os.killpg(child.pid, sig)
        except ProcessLookupError:
          pass
    deadline = time.monotonic() + GRACE_S
    while any(child.poll() is None for child in children) and time.monotonic() < deadline:
      time.sleep(0.1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--private_tmp", default="",
                      help="give process i its own TMPDIR, PRIVATE_TMP/process_i")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the command to run after --")
  sys.exit(launch(command, args.processes, args.devices_per_process, args.private_tmp))


if __name__ == "__main__":
  main()
