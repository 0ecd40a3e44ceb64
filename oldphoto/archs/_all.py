"""Imports every architecture module so that each registers itself. Add new files here."""
from . import unet_detector  # noqa: F401
from . import vae_encoder, vae_decoder, vae, partial_nonlocal, mapping  # noqa: F401,E401  latent restoration
from . import refiner  # noqa: F401  image-space fusion after the latent restoration
from . import patch_discriminator, latent_discriminator  # noqa: F401,E401  training-only discriminators
from . import colorizer_unet  # noqa: F401
from . import upscaler  # noqa: F401
from . import blend_gate  # noqa: F401  scan-blend strengths from image statistics
