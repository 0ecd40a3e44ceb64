"""CMYK -> RGB for JPEG and TIFF input, band by band: through the embedded ICC profile to sRGB when
littleCMS can use it (8-bit), else the plain formula R = (1 - C)(1 - K) (approximate, no profile kept).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms


class CmykConverter:
    def __init__(self, icc: bytes | None, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.notes: list[str] = []
        self._transform = None
        if icc is not None and self.dtype == np.uint8:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                self._transform = ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), "CMYK", "RGB",
                                                          renderingIntent=ImageCms.Intent.PERCEPTUAL)
            except ImageCms.PyCMSError as e:
                self.notes.append(f"embedded ICC profile unusable for CMYK conversion ({e}); plain formula used")
        if self._transform is not None:
            self.notes.append("CMYK converted to RGB with the embedded ICC profile; sRGB profile attached")
            self.icc_out: bytes | None = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        else:
            if icc is not None:
                self.notes.append("CMYK ICC profile dropped: it does not describe the RGB output")
            self.notes.append("CMYK converted to RGB with the plain formula (approximate colours)")
            self.icc_out = None

    def __call__(self, band: np.ndarray) -> np.ndarray:
        """band (rows, W, 4) CMYK (0 = no ink) -> (rows, W, 3) RGB, same dtype."""
        if band.ndim != 3 or band.shape[2] != 4:
            raise ValueError(f"expected a (rows, W, 4) CMYK band, got shape {band.shape}")
        if self._transform is not None:
            img = Image.frombuffer("CMYK", (band.shape[1], band.shape[0]), np.ascontiguousarray(band),
                                   "raw", "CMYK", 0, 1)
            return np.asarray(ImageCms.applyTransform(img, self._transform))
        top = float(np.iinfo(self.dtype).max)
        f = band.astype(np.float32) / top
        rgb = (1.0 - f[..., :3]) * (1.0 - f[..., 3:4])
        return np.rint(rgb * top).astype(self.dtype)
