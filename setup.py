"""The one thing pyproject.toml cannot say: the optional C extension of the calibrator.

``gelu_quant.calib._statskernel`` holds the per-value loops of the streaming statistics. It is
optional: without a C compiler the install still succeeds and numpy does the same work, giving
the same statistics (``gelu_quant.calib.stats.backend()`` tells which one runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gelu_quant.calib._statskernel",
            sources=["calib/_statskernel.c"],
            # -fno-trapping-math lets the compiler vectorise the branch-free loops; the values
            # computed are unchanged (no fast-math: IEEE arithmetic throughout)
            extra_compile_args=["-O3", "-fno-trapping-math"],
            optional=True,
        )
    ]
)
