"""Processor settings (see the README's table)."""

from shared.settings import CommonSettings


class ProcessorSettings(CommonSettings):
    processor_port: int = 8003
    processor_concurrency: int = 32
    # CPU priority (Unix niceness): processing yields to ingest and the broker on a shared machine
    processor_nice: int = 10
    processor_gpu_delay_ms: str = "100-400"  # "LOW-HIGH", one number, or 0 (off)
    image_max_bytes: int = 20 * 1024 * 1024
    image_max_pixels: int = 64_000_000
    # The only decoders Pillow may run (comma-separated Pillow format names); any other format
    # fails its image with a reason naming the format when it can be told.
    image_formats: str = "JPEG,PNG,WEBP,GIF,BMP,TIFF"
    image_connect_timeout_s: float = 5.0
    image_total_timeout_s: float = 30.0
    image_max_redirects: int = 3
    image_attempts: int = 3
    image_retry_base_s: float = 0.2
    image_allow_private_networks: bool = False
    image_cache_ttl_s: float = 300.0
    image_cache_size: int = 10_000
