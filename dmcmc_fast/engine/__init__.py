"""The engine: what makes many chains run at the network's own speed.

- `graph`: `GraphedDenoiser` (a CUDA graph per batch-size bucket, static buffers, eager fallback) and
  `GraphedStep` (a whole sampler step captured, its varying values in device buffers).
- `bookkeeping`: the integer books of many chains (C++ `dmcmc_fast._C`, torch twin): job slots,
  packing of fixed-size network batches, NFE ledger, in-order release of finished samples.
- `runner`: pipelined DLG (`run_dlg_pipelined`, `stream_dlg`): MCMC steps and earlier blocks'
  denoising steps share every network batch; same samples as `mcmc.dlg.run_dlg`.
- `stream`: `InOrder` / `Chunk`, finished samples released in sample-id order.

Submodules are imported where used (`from dmcmc_fast.engine.runner import run_dlg_pipelined`), so
importing the books does not pull in the samplers.
"""
