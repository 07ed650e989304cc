"""Fused per-step updates (installed as `dmcmc_fast.kernels`): one file per kernel family, each with
its Triton kernel, launcher and plain-torch reference; entry points dispatch by device
(CUDA -> Triton, CPU -> reference; force with `backend=` or `DMCMC_KERNELS`). See `kernels/API.md`.
"""
