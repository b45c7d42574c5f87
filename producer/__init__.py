"""poolq producer: load generation, experiments, reports and capacity planning."""
