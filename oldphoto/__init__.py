"""oldphoto: batch restoration of scanned old photographs."""

__version__ = "0.1.0"
