"""One module per bootstrap step; each exposes `run(ctx) -> StepOutcome`."""
