"""The platform under the algorithm: XLA:CPU-friendly layers and jit options (`xla_cpu`), devices and their
meshes (`devices`), and starting several processes (`distributed`, over `topology`)."""
