"""Training commands: `dmcmc-fast train <what> ...` runs `dmcmc_fast.training.<what>.main(argv)`."""
