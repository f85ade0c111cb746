"""The paper's Table 1: its records (`records`), the measurements on trained runs (`measurements`), the
rendered rows (`render`), the harness that trains or reuses the runs (`harness`); `reproduce` is the public
face."""
