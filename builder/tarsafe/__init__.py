"""Every archive the tool reads or makes: one safe extractor (`extract`), its limits against
bombs (`limits`), and deterministic tar streams (`write`). The shared bottom layer: no stage
unpacks a zip or tar any other way."""

from builder.tarsafe.extract import (
    FIXED_MTIME,
    extract_tar,
    extract_tar_stream,
    extract_zip,
    safe_members,
    safe_relpath,
)
from builder.tarsafe.limits import MAX_BYTES_ENV, MAX_MEMBERS_ENV, Limits
from builder.tarsafe.write import SPOOL_MAX_BYTES, tar_bytes, tar_from_dir, zip_to_tar

__all__ = [
    "FIXED_MTIME",
    "MAX_BYTES_ENV",
    "MAX_MEMBERS_ENV",
    "SPOOL_MAX_BYTES",
    "Limits",
    "extract_tar",
    "extract_tar_stream",
    "extract_zip",
    "safe_members",
    "safe_relpath",
    "tar_bytes",
    "tar_from_dir",
    "zip_to_tar",
]
