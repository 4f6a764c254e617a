"""``synthset tune``: an Optuna search over generation knobs, an orchestrator above the stages
(each trial plans, generates and trains a proxy classifier with the stages' own functions)."""
