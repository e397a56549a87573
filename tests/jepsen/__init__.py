"""A Jepsen-style scenario: real processes, an open-loop workload, a fault schedule, and a
history checked by an oracle that does not share the code under test.

- ``region``: a whole region (K ledger processors, both generator pools, one API) as
  real processes on a given cluster, with a supervisor thread that restarts what exits;
- ``workload``: clients, purchases and ``GET /memes`` at a target rate, every attempt
  recorded in the history (``history``);
- ``nemesis``: the fault schedule, deterministic from a seed, and its executor;
- ``recovery``: how long each processor kill kept its partitions without a decision;
- ``run``: ``python -m tests.jepsen.run``, which puts them together and calls the
  checker (``checker``).
"""
