"""Process-level settings that must be in place before the heavy libraries start (allocator, devices)."""
