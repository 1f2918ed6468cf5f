"""What the kernel's data means: each module reads through ``vmcorefs.memory`` only."""
