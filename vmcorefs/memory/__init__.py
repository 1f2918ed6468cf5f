"""Physical and kernel virtual memory over a dump container."""
