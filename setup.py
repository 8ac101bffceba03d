from setuptools import find_packages, setup

setup(
    name="ien-tracking",
    version="0.1.0",
    description="Rotation-equivariant visual object tracking with implicitly equivariant CNNs (IEN)",
    packages=find_packages(include=["common", "common.*", "data", "data.*", "backbones", "backbones.*", "tracker",
                                    "tracker.*", "training", "training.*", "evaluation", "evaluation.*"])
    + ["ien_tools"],
    # the command-line tools (tools/*.py, run as scripts in a checkout) also install as a package
    # with console commands, so they work outside the checkout after `pip install .`
    package_dir={"ien_tools": "tools"},
    entry_points={"console_scripts": [
        "ien-track = ien_tools.track:main",
        "ien-train = ien_tools.train_tracker:main",
        "ien-evaluate = ien_tools.evaluate:main",
        "ien-tune = ien_tools.tune_tracking:main",
        "ien-benchmark = ien_tools.benchmark_fps:main",
        "ien-equivariance = ien_tools.equivariance:main",
        "ien-make-rotating = ien_tools.make_rotating:main",
        "ien-generate = ien_tools.generate_sequences:main",
        "ien-export = ien_tools.export:main",
    ]},
    python_requires=">=3.11",
    # Loose bounds here so a GPU user keeps the CUDA torch they already have; the exact CPU pins
    # live in constraints-cpu.txt and the known-good set in requirements.txt.
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24,<2.3",
        "e2cnn==0.2.3",
        "got10k==0.1.3",
        "six",
        "opencv-contrib-python>=4.8",   # contrib: the KCF and CSRT baselines (one cv2 package only)
        "shapely>=2.0",
        "scipy",
        "matplotlib",
        "pillow",
        "tqdm",
        "scikit-learn",
        "scikit-image",
        # the default inference backend (tracker/backends.py) and tools/export.py; onnx is what
        # torch's ONNX exporter writes with
        "onnxruntime>=1.17",
        "onnx>=1.15",
    ],
    extras_require={"test": ["pytest"], "logs": ["tensorboard"]},   # logs: TensorBoard events of training
    package_data={"tracker": ["weights/*.pth", "weights/generated/*.pth", "weights/*.md", "weights/LICENSE-*"]},
)
