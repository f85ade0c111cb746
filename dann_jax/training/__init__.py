"""Running the step: the host loop and seeds (`loop`), several devices (`parallel`), evaluation passes,
checkpoints, the collapse guard and its health checks, and the TensorBoard writer."""
