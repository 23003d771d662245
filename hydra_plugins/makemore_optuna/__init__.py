"""makemore's Optuna sweeper for Hydra (`hydra/sweeper=makemore_optuna`): see optuna_sweeper.py."""
