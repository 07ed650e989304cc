"""The engine: the one place that runs samplers fast (ARCHITECTURE.md has the whole house).

- `graph`: CUDA graphs: `GraphedDenoiser` (the network per batch-size bucket, static buffers, eager fallback
  with its reason; it also owns the whole-batch graphs of its network) and `GraphedStep` (a step that reads
  and writes device buffers only, captured once).
- `whole_run`: a whole batch of a fixed-step sampler (prior, grid, every model call and update, the final
  check) as one graph, replayed for the later batches of its kind.
- `dlg_whole`: DLG's rounds of blocks as one graph (a `GraphedStep`), the chains' state resident in it.
- `dlg_run`: DLG through the doors (chains in groups, rounds of blocks, per-sample books, shards, resume).
- `audit`: which ops read a device value back to the host (the sync audit of the hot loop).

Submodules are imported where used, so importing one does not pull in the samplers.
"""
