from pathlib import Path

from setuptools import find_packages, setup

version = {}
for line in Path("oldphoto/__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

setup(
    name="oldphoto",
    version=version["v"],
    description="Batch restoration of scanned old photographs (latent space translation, Wan et al. 2020)",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["oldphoto", "oldphoto.*"]) + ["oldphoto.weights_data"],
    # Ship the trained models inside the package for non-editable installs; editable installs read weights/.
    package_dir={"oldphoto.weights_data": "weights"},
    package_data={"oldphoto.weights_data": ["*.pt", "MANIFEST.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",  # pinned: a range would pull a multi-GB CUDA build
        "numpy>=1.24",
        "pillow>=10.0",
        "tifffile>=2023.7.10",
        "imagecodecs>=2023.9.18",  # LZW/JPEG/Deflate TIFF codecs that archives use; JPEG 2000 (OpenJPEG)
        "piexif>=1.1.3",
        "click>=8.1",
        "rich>=13.0",
        "joblib>=1.3",
    ],
    extras_require={"test": ["pytest>=7.4"]},
    entry_points={"console_scripts": ["oldphoto=oldphoto.cli:main"]},
)
