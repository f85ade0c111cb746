"""The platform under the algorithm: XLA:CPU-friendly layers and jit options (`xla_cpu`), flags that tracing
reads (`tracing`), devices and their meshes (`devices`), and starting several processes (`distributed`, over
`topology`)."""
