"""Package definition for pstroke.

Version ranges here admit the newer Pythons of Colab and Cloud TPU VMs; the exact versions that CI
tests live in constraints.txt.
"""

import setuptools

setuptools.setup(
    name="pstroke",
    version="0.1.0",
    description="Process-driven image generation (plan, sketch, inspect, refine) in JAX/Flax.",
    packages=setuptools.find_packages(include=["pstroke", "pstroke.*"]),
    package_data={"pstroke": ["world/assets/*", "assets/*"]},
    python_requires=">=3.10,<3.15",
    install_requires=[
        "jax>=0.6,<0.12",
        "flax>=0.10,<0.14",
        "optax>=0.2.4,<0.4",
        "orbax-checkpoint>=0.11,<0.14",
        "tensorflow-datasets>=4.9.7,<5",
        "importlib_resources>=6,<8",  # used by tensorflow-datasets via etils.epath; not pulled in by it
        "array_record>=0.7,<0.10",
        "grain>=0.2.10,<0.4",
        "ml_collections>=1.0,<2",
        "absl-py>=2.0,<3",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "pillow>=10,<14",
        "safetensors>=0.4,<0.9",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
    ],
    extras_require={"test": ["pytest>=8,<10"]},
)
